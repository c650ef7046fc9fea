"""Meters of streamed media, on the media clock, in integers: never floats.

The wall clock never measures media; it only bounds what a client's RTP timestamps may claim.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from media.opus_duration import opus_packet_samples

_RTP_WRAP = 1 << 32
_NS = 1_000_000_000

# Timestamps that move against the arrival clock by more than this are not network jitter but a jump.
JUMP_TOLERANCE_NS = 300_000_000
# How much earlier than its first arrival a source's audio may be taken to have begun, when its later
# packets show the first one was late. Forged timestamps can gain this much once, and no more.
START_SLACK_NS = 200_000_000
# RFC 6716: an Opus packet holds at most 120 ms; one that claims more is malformed.
_MAX_PACKET_MS = 120
# Sources kept apart; past this many, the one heard least recently is settled into a fixed total.
MAX_SOURCES = 8


@dataclass
class _Source:
    """One SSRC. Timestamps are extended (unwrapped) RTP timestamps; times are monotonic ns."""

    origin: int  # its first packet
    began_ns: int  # when the audio at `origin` began, at the latest (the arrivals bound it)
    earliest: int  # the earliest timestamp of its first span (a reordered packet may precede `origin`)
    earliest_start_ns: int  # its audio is never taken to have begun before this
    first: int  # the current span: its earliest packet,
    end: int  # just after its latest packet's audio,
    newest: int  # and its newest packet, the reference for unwrapping and for jumps
    newest_arrival_ns: int
    latest_arrival_ns: int
    received: int  # samples the packets themselves carry
    closed: int = 0  # samples of the spans before the current one
    in_first_span: bool = True

    @classmethod
    def begin(cls, timestamp: int, duration: int, arrival_ns: int, rate: int) -> _Source:
        # The first packet's audio was all captured before it could arrive.
        began_ns = arrival_ns - duration * _NS // rate
        return cls(
            origin=timestamp,
            began_ns=began_ns,
            earliest=timestamp,
            earliest_start_ns=began_ns - START_SLACK_NS,
            first=timestamp,
            end=timestamp + duration,
            newest=timestamp,
            newest_arrival_ns=arrival_ns,
            latest_arrival_ns=arrival_ns,
            received=duration,
        )

    def add(self, timestamp: int, duration: int, arrival_ns: int, rate: int) -> None:
        self.received += duration
        self.latest_arrival_ns = max(self.latest_arrival_ns, arrival_ns)
        # The signed distance from the newest packet unwraps 32-bit timestamps, late packets included.
        delta = (timestamp - self.newest + _RTP_WRAP // 2) % _RTP_WRAP - _RTP_WRAP // 2
        extended = self.newest + delta
        # Timestamps advance as the arrival clock does; what differs is jitter, or a jump.
        drift_ns = delta * _NS // rate - (arrival_ns - self.newest_arrival_ns)
        if abs(drift_ns) <= JUMP_TOLERANCE_NS:
            self.first = min(self.first, extended)
            self.end = max(self.end, extended + duration)
            if delta > 0:
                self.newest, self.newest_arrival_ns = extended, arrival_ns
            if self.in_first_span:
                self.earliest = self.first
                # A packet arrives after its audio ended: a bound on when the audio at `origin` began.
                self.began_ns = min(self.began_ns, arrival_ns - (extended + duration - self.origin) * _NS // rate)
        elif not (self.first <= extended and extended + duration <= self.end):
            # Not a late packet inside what is counted: the clock does not explain this timestamp, so a
            # new span starts here and the jump is no time at all.
            self.closed += self.end - self.first
            self.first, self.end = extended, extended + duration
            self.newest, self.newest_arrival_ns = extended, arrival_ns
            self.in_first_span = False

    def start_ns(self, rate: int) -> int:
        """When its audio began, as the wall clock allows."""
        return max(self.began_ns - (self.origin - self.earliest) * _NS // rate, self.earliest_start_ns)

    def samples(self, rate: int) -> int:
        spans = self.closed + self.end - self.first
        wall = (self.latest_arrival_ns - self.start_ns(rate)) * rate // _NS
        return min(max(spans, self.received), wall)


@dataclass
class RtpAudioMeter:
    """Inbound audio, counted from RTP packets as they arrive, before any jitter buffer.

    The streamed time is the span of RTP timestamps each source covered, so a lost packet or an
    Opus DTX pause counts for the time it spans, and packets still in the jitter buffer when the
    stream stops are counted too (decoded frames would miss them).

    Timestamps are the client's to forge, so the arrival clock bounds them: a jump the clock does
    not explain starts a new span (the jump is not time), a source never counts less than its
    packets carried nor more than the wall-clock time it streamed for, and all sources together
    never count more than the wall-clock time since the first of them began.
    """

    clock_rate: int = 48_000
    packets: int = 0
    _sources: dict[int, _Source] = field(default_factory=dict)
    _settled: int = 0  # samples of sources no longer kept apart
    _start_ns: int | None = None
    _latest_ns: int = 0

    def on_packet(self, ssrc: int, timestamp: int, payload: bytes, arrival_ns: int | None = None) -> None:
        duration = opus_packet_samples(payload, self.clock_rate)
        if duration == 0 or duration > self.clock_rate * _MAX_PACKET_MS // 1000:
            return  # padding, garbage or a malformed packet carries no audio
        now = time.monotonic_ns() if arrival_ns is None else arrival_ns
        self.packets += 1
        source = self._sources.get(ssrc)
        if source is None:
            if len(self._sources) >= MAX_SOURCES:
                self._settle_quietest()
            source = self._sources[ssrc] = _Source.begin(timestamp, duration, now, self.clock_rate)
        else:
            source.add(timestamp, duration, now, self.clock_rate)
        start = source.start_ns(self.clock_rate)
        self._start_ns = start if self._start_ns is None else min(self._start_ns, start)
        self._latest_ns = max(self._latest_ns, now)

    def _settle_quietest(self) -> None:
        ssrc = min(self._sources, key=lambda s: self._sources[s].latest_arrival_ns)
        self._settled += self._sources.pop(ssrc).samples(self.clock_rate)

    @property
    def samples(self) -> int:
        if self._start_ns is None:
            return 0
        total = self._settled + sum(s.samples(self.clock_rate) for s in self._sources.values())
        return min(total, (self._latest_ns - self._start_ns) * self.clock_rate // _NS)

    @property
    def media_us(self) -> int:
        return self.samples * 1_000_000 // self.clock_rate


@dataclass
class SampleCounter:
    """Outbound audio actually handed to the sender, in samples at `rate`."""

    rate: int
    samples: int = 0

    @property
    def media_us(self) -> int:
        return self.samples * 1_000_000 // self.rate


@dataclass
class VideoMeter:
    """Video, from presentation timestamps: the span from the first frame to the end of the last."""

    time_base_num: int = 1
    time_base_den: int = 90_000
    frame_duration_pts: int = 3_000  # the last frame's own duration, until a second frame tells it
    _first: int | None = None
    _last: int | None = None

    def on_frame(self, pts: int) -> None:
        if self._first is None or self._last is None:
            self._first = self._last = pts
            return
        if pts > self._last:
            self.frame_duration_pts = pts - self._last
            self._last = pts
        self._first = min(self._first, pts)

    @property
    def media_us(self) -> int:
        if self._first is None or self._last is None:
            return 0
        span = self._last - self._first + self.frame_duration_pts
        return span * self.time_base_num * 1_000_000 // self.time_base_den


@dataclass
class WallClockMeter:
    """Connected time, from the monotonic clock in integer nanoseconds."""

    _started_ns: int | None = None
    _stopped_ns: int | None = None

    def start(self) -> None:
        if self._started_ns is None:
            self._started_ns = time.monotonic_ns()

    def stop(self) -> None:
        if self._started_ns is not None and self._stopped_ns is None:
            self._stopped_ns = time.monotonic_ns()

    @property
    def media_us(self) -> int:
        if self._started_ns is None:
            return 0
        end = self._stopped_ns if self._stopped_ns is not None else time.monotonic_ns()
        return (end - self._started_ns) // 1000
