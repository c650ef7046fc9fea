"""Meters of streamed media, on the media clock, in integers: never floats, never the wall clock for media."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from media.opus_duration import opus_packet_samples

_RTP_WRAP = 1 << 32


@dataclass
class _SsrcSpan:
    first: int  # extended timestamp of the earliest packet
    end: int  # extended timestamp just after the latest packet's audio
    newest: int  # extended timestamp of the newest packet, the reference for unwrapping


@dataclass
class RtpAudioMeter:
    """Inbound audio, counted from RTP packets as they arrive, before any jitter buffer.

    The streamed time is the span of RTP timestamps each source covered, so a lost packet or an
    Opus DTX pause counts for the time it spans, and packets still in the jitter buffer when the
    stream stops are counted too (decoded frames would miss them).
    """

    clock_rate: int = 48_000
    packets: int = 0
    _spans: dict[int, _SsrcSpan] = field(default_factory=dict)

    def on_packet(self, ssrc: int, timestamp: int, payload: bytes) -> None:
        duration = opus_packet_samples(payload, self.clock_rate)
        if duration == 0:
            return  # padding or garbage carries no audio
        self.packets += 1
        span = self._spans.get(ssrc)
        if span is None:
            self._spans[ssrc] = _SsrcSpan(first=timestamp, end=timestamp + duration, newest=timestamp)
            return
        # The signed distance from the newest packet unwraps 32-bit timestamps, late packets included.
        delta = (timestamp - span.newest + _RTP_WRAP // 2) % _RTP_WRAP - _RTP_WRAP // 2
        extended = span.newest + delta
        span.newest = max(span.newest, extended)
        span.first = min(span.first, extended)
        span.end = max(span.end, extended + duration)

    @property
    def samples(self) -> int:
        return sum(span.end - span.first for span in self._spans.values())

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
