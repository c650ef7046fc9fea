"""Client-side clocks for the voice benchmark: when each voiced sample left, when each reply frame arrived.

All times are the client's event-loop clock (loop.time(), monotonic), so they compare with each other
and never with the server's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from tests.rtc_client import RATE, PcmSourceTrack, Recorder

BLOCK = RATE // 100  # 10 ms: fine enough to place the end of a word
# A 10 ms block counts as voiced when louder than this share of the utterance's loudest block (-34 dB),
# and never below an absolute floor (espeak's silence is exact zeros, Piper's a few LSB).
VOICED_SHARE = 0.02
VOICED_FLOOR = 60.0
# A received 20 ms frame carries reply speech when its RMS is above this; decoded Opus silence is ~0,
# the quietest onset of a Piper reply a few hundred.
REPLY_RMS = 200.0


def block_rms(samples: np.ndarray, size: int) -> np.ndarray:
    blocks = samples[: samples.size // size * size].reshape(-1, size).astype(np.float64)
    return np.sqrt((blocks**2).mean(axis=1))


def voiced_span(samples: np.ndarray) -> tuple[int, int]:
    """(first voiced sample, one past the last), to 10 ms."""
    rms = block_rms(samples, BLOCK)
    voiced = np.flatnonzero(rms > max(VOICED_FLOOR, VOICED_SHARE * float(rms.max(initial=0.0))))
    if not voiced.size:
        raise ValueError("no voiced audio in the utterance")
    return int(voiced[0]) * BLOCK, (int(voiced[-1]) + 1) * BLOCK


@dataclass
class Playback:
    """One utterance handed to the source, and when its first and last voiced samples were sent."""

    samples: np.ndarray
    voiced_start: int
    voiced_end: int
    first_voiced_sent: float | None = None
    last_voiced_sent: float | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # the last voiced sample is sent


class TimedSource(PcmSourceTrack):
    """PcmSourceTrack that notes the moment the frame holding a playback's first (last) voiced sample went out.

    "Went out" is when recv() hands the frame to aiortc's sender, which encodes and sends it at once:
    the whole 20 ms frame leaves together, so that is when its last sample reaches the wire.
    """

    def __init__(self) -> None:
        super().__init__()
        self._playback: Playback | None = None

    def play_timed(self, samples: np.ndarray, voiced_start: int, voiced_end: int) -> Playback:
        playback = Playback(samples, voiced_start, voiced_end)
        self._playback = playback
        self.play(samples)
        return playback

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        playback = self._playback
        # Nothing awaits between taking the samples and returning, so _pos is where this frame ended.
        if playback is not None and self._samples is playback.samples:
            now, sent = asyncio.get_running_loop().time(), self._pos
            if playback.first_voiced_sent is None and sent > playback.voiced_start:
                playback.first_voiced_sent = now
            if playback.last_voiced_sent is None and sent >= playback.voiced_end:
                playback.last_voiced_sent = now
                playback.ended.set()
                self._playback = None
        return frame


@dataclass
class TimedRecorder(Recorder):
    """Recorder that also keeps each received frame's arrival time and loudness."""

    arrivals: list[float] = field(default_factory=list)
    levels: list[float] = field(default_factory=list)
    voiced: list[float] = field(default_factory=list)  # arrivals of frames with reply speech
    # For each of `voiced`: when its RTP packet reached the client, before the client's jitter buffer
    # (aiortc's holds 4 packets, 80 ms, before it decodes; a browser's adapts, ~20-40 ms on a clean path).
    voiced_wire: list[float] = field(default_factory=list)
    packet_arrivals: dict[int, float] = field(default_factory=dict)  # decoded frame's pts -> packet arrival
    _first_timestamp: int | None = None

    def on_packet(self, packet: RtpPacket) -> None:
        """Tap on the client's audio receiver: note when each packet arrived, keyed as aiortc keys the
        decoded frame's pts (its RTP timestamp less the stream's first)."""
        if self._first_timestamp is None:
            self._first_timestamp = packet.timestamp
        pts = (packet.timestamp - self._first_timestamp) % (1 << 32)
        self.packet_arrivals.setdefault(pts, asyncio.get_running_loop().time())
    keep_audio: bool = False  # keep the samples too (only the echo check needs them)
    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (arrival, samples) if keep_audio

    async def _run(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = loop.time()
            data = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0].astype(np.int16)
            level = float(np.sqrt(np.mean(data.astype(np.float64) ** 2))) if data.size else 0.0
            self.arrivals.append(now)
            self.levels.append(level)
            if level > REPLY_RMS:
                self.voiced.append(now)
                wire = self.packet_arrivals.get(frame.pts) if frame.pts is not None else None
                self.voiced_wire.append(min(now, wire) if wire is not None else now)
            if self.keep_audio:
                self.audio.append((now, data))
            self.frames += 1

    def reply_start(self, after: float, quiet_before: float = 0.1, *, wire: bool = False) -> float | None:
        """Arrival of the first reply frame after `after` that follows `quiet_before` s without reply speech
        (with `wire`, when that frame's packet reached the client, before its jitter buffer).

        The quiet before it keeps the tail of an earlier reply, still playing at `after`, from counting.
        """
        previous = None
        for index, t in enumerate(self.voiced):
            if t > after and (previous is None or t - previous >= quiet_before):
                return self.voiced_wire[index] if wire else t
            previous = t
        return None

    def voiced_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.voiced if start < t <= end)

    def last_before_gap(
        self, after: float, gap: float, *, include_before: bool = False, wire: bool = False
    ) -> float | None:
        """Arrival of the first reply frame after `after` that is followed by `gap` s without reply speech
        (with `wire`, when that frame's packet reached the client).

        With `include_before`, the last reply frame at or before `after` is a candidate too: the bot may have
        been between two words when `after` came, and never made another sound.
        """
        now = asyncio.get_running_loop().time()
        indexed = list(enumerate(self.voiced))
        candidates = [(i, t) for i, t in indexed if t > after]
        if include_before:
            earlier = [(i, t) for i, t in indexed if t <= after]
            candidates = earlier[-1:] + candidates
        followers = [t for _, t in candidates[1:]] + [now]
        for (index, here), following in zip(candidates, followers, strict=True):
            if following - here >= gap:
                return self.voiced_wire[index] if wire else here
        return None

    def quiet_for(self) -> float:
        """Seconds since the last reply frame arrived (since forever: a large number)."""
        last = self.voiced[-1] if self.voiced else float("-inf")
        return asyncio.get_running_loop().time() - last

    def audio_between(self, start: float, end: float) -> np.ndarray:
        """The received samples of frames that arrived in (start, end]; needs keep_audio."""
        picked = [data for t, data in self.audio if start < t <= end]
        return np.concatenate(picked) if picked else np.zeros(0, np.int16)
