"""Opus encoding on the event loop, for the outbound track.

aiortc encodes each outbound frame in a worker thread: a thread hand-off, a future and a loop
wake-up every 20 ms per call, plus a pure-Python audio-level loop over the frame. Encoding right
here and handing aiortc a ready packet (which it only packetizes) costs less than the hand-off alone.

libopus is still the dearest thing a call does (~150-300 us a frame at complexity 10, digital
silence included), and the bot is silent most of a call: once the encoder's output for digital
silence has settled (its look-ahead holds nothing but zeros and it answers zeros with the same
bytes every time), further silent frames get those bytes without running libopus at all.
"""

from __future__ import annotations

import fractions

import av
import numpy as np

_RATE = 48_000
TIME_BASE = fractions.Fraction(1, _RATE)
# Speech, mono: 32 kb/s is transparent for a voice; stereo at 96 kb/s (aiortc's default) is not needed.
_BIT_RATE = 32_000
# Identical packets for digital silence in a row before they are reused: by then the look-ahead
# (6.5 ms) has long been flushed, so no tail of the speech before is ever cut.
SILENCE_SETTLED = 3


class InlineOpusEncoder:
    def __init__(self) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.bit_rate = _BIT_RATE
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = _RATE
        codec.time_base = TIME_BASE
        # libopus's default complexity (10). At 5, speech costs ~20% less, but digital silence no
        # longer comes out as one repeated packet, so the silence below could not be reused.
        codec.options = {"application": "voip"}
        # libopus encodes on the caller's thread. PyAV's default asks FFmpeg for one thread per CPU
        # (thread_count 0) from codecs that can thread: say 1, so no build ever gives each call's
        # encoder a pool of its own.
        codec.thread_count = 1
        codec.thread_type = "NONE"
        self._codec: av.AudioCodecContext | None = codec
        self._pts = 0  # the encoder's own input clock (it needs increasing pts)
        self._silence: bytes | None = None  # the settled packet for digital silence
        self._last_silent: bytes | None = None
        self._silent_repeats = 0
        self.frames_reused = 0  # silent frames that never reached libopus

    def encode(self, samples: np.ndarray, pts: int) -> av.Packet:
        """One 20 ms frame (960 int16 samples) -> one Opus packet stamped `pts` (in 1/48000 s)."""
        packet = av.Packet(self.encode_payload(samples))
        # Our own clock, not the encoder's (which starts negative by its look-ahead).
        packet.pts = pts
        packet.time_base = TIME_BASE
        return packet

    def encode_payload(self, samples: np.ndarray) -> bytes:
        """One 20 ms frame (960 int16 samples) -> the Opus payload for it."""
        if self._codec is None:
            raise RuntimeError("the encoder is closed")
        silent = not samples.any()
        if silent and self._silence is not None:
            self.frames_reused += 1
            return self._silence
        if not silent:
            self._silence = self._last_silent = None  # speech again: silence settles anew after it
            self._silent_repeats = 0
        payload = self._encode(samples)
        if silent:
            if payload == self._last_silent:
                self._silent_repeats += 1
            else:
                self._last_silent, self._silent_repeats = payload, 1
            if self._silent_repeats >= SILENCE_SETTLED:
                self._silence = payload
        return payload

    def _encode(self, samples: np.ndarray) -> bytes:
        assert self._codec is not None
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = _RATE
        frame.pts = self._pts
        frame.time_base = TIME_BASE
        self._pts += samples.size
        packets = self._codec.encode(frame)
        if len(packets) != 1:
            raise RuntimeError(f"libopus returned {len(packets)} packets for one 20 ms frame")
        return bytes(packets[0])

    def close(self) -> None:
        """Free libopus's state now (end of call), not whenever the call's objects are collected."""
        self._codec = None
