"""Opus encoding on the event loop, for the outbound track.

aiortc encodes each outbound frame in a worker thread: a thread hand-off, a future and a loop
wake-up every 20 ms per call, plus a pure-Python audio-level loop over the frame. A 20 ms mono
Opus frame encodes in under 0.1 ms, so encoding it right here and handing aiortc a ready packet
(which it only packetizes) costs less than the hand-off alone.
"""

from __future__ import annotations

import fractions

import av
import numpy as np

_RATE = 48_000
_TIME_BASE = fractions.Fraction(1, _RATE)
# Speech, mono: 32 kb/s is transparent for a voice; stereo at 96 kb/s (aiortc's default) is not needed.
_BIT_RATE = 32_000


class InlineOpusEncoder:
    def __init__(self) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.bit_rate = _BIT_RATE
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = _RATE
        codec.time_base = _TIME_BASE
        codec.options = {"application": "voip"}
        # libopus encodes on the caller's thread. PyAV's default asks FFmpeg for one thread per CPU
        # (thread_count 0) from codecs that can thread: say 1, so no build ever gives each call's
        # encoder a pool of its own.
        codec.thread_count = 1
        codec.thread_type = "NONE"
        self._codec: av.AudioCodecContext | None = codec

    def encode(self, samples: np.ndarray, pts: int) -> av.Packet:
        """One 20 ms frame (960 int16 samples) -> one Opus packet stamped `pts` (in 1/48000 s)."""
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = _RATE
        frame.pts = pts
        frame.time_base = _TIME_BASE
        if self._codec is None:
            raise RuntimeError("the encoder is closed")
        packets = self._codec.encode(frame)
        if len(packets) != 1:
            raise RuntimeError(f"libopus returned {len(packets)} packets for one 20 ms frame")
        packet = packets[0]
        # Our own clock, not the encoder's (which starts negative by its look-ahead).
        packet.pts = pts
        packet.time_base = _TIME_BASE
        return packet

    def close(self) -> None:
        """Free libopus's state now (end of call), not whenever the call's objects are collected."""
        self._codec = None
