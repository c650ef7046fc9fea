"""Opus encoding on the event loop, for the outbound track.

aiortc encodes each outbound frame in a worker thread: a thread hand-off, a future and a loop
wake-up every 20 ms per call, plus a pure-Python audio-level loop over the frame. Encoding right
here and handing aiortc a ready packet (which it only packetizes) costs less than the hand-off alone.

libopus is still the dearest thing a call does while the bot speaks. It runs in Opus's restricted
low-delay mode (CELT alone, fullband) at complexity 5 (what WebRTC itself uses on phones). For the
bot's speech at 32 kb/s that costs ~55 us a frame where VoIP mode (SILK + CELT hybrid) cost ~145 (and
~195 at libopus's default complexity of 10), delays the audio 2.5 ms instead of 6.5, and follows the
voice more closely: the hybrid mode at this rate drops the band above 8 kHz by ~3 dB, CELT keeps every
band within 0.5 dB (0.2 measured; tests/test_opus_encoder.py). What it gives up is SILK's edge below ~24 kb/s, a
rate we never send at. libopus is called directly (media.libopus), without PyAV's frame and packet
objects and FFmpeg's multistream wrapper around it (a PyAV encoder is the fallback where libopus
cannot be loaded directly).

The bot is silent most of a call: once the encoder's output for digital silence has settled (its
look-ahead holds nothing but zeros and it answers zeros with the same few packets in a fixed cycle:
one packet in the low-delay mode; 1, 4 or 12 in VoIP mode), further silent frames get that cycle's
packets without running libopus at all. (CELT's memory of band energies would still drift a little
through the pause: the words after it come out within 0.5 dB of an encoder that saw every zero.)
A frame within +-NEAR_SILENCE of zero (-84 dBFS, under any playback's noise floor: decoded Opus
silence, the last bits of a fade) counts as digital silence: the loopback echo of a muted microphone
is such ones and twos, never quite zeros.
"""

from __future__ import annotations

import fractions

import av
import numpy as np

from media import libopus

_RATE = 48_000
_FRAME = 960
TIME_BASE = fractions.Fraction(1, _RATE)
# Speech, mono: 32 kb/s is transparent for a voice; stereo at 96 kb/s (aiortc's default) is not needed.
_BIT_RATE = 32_000
COMPLEXITY = 5
APPLICATION = libopus.APPLICATION_RESTRICTED_LOWDELAY
LOOKAHEAD_SAMPLES = 120  # what the decoded audio lags the input by, in this mode (2.5 ms)
# A cycle of packets for digital silence must have come round this many times in a row before it is
# reused: by then the look-ahead (2.5 ms) has long been flushed, so no tail of the speech before is cut.
SILENCE_SETTLED = 3
# The longest cycle looked for (libopus's cycles for silence are 1 packet long in low-delay mode; 1, 3, 4 or 12 in VoIP).
MAX_SILENCE_CYCLE = 12
# The largest sample magnitude of a frame sent as digital silence. More (4) already changes how the
# speech around a word gap encodes (the encoder re-settles after each zeroed gap).
NEAR_SILENCE = 2
# The one all-zero frame: read-only, so a frame that *is* it needs no look at its samples (the silent
# bot sends it 50 times a second; encoder and sent-listeners check identity before they scan).
SILENT_FRAME = np.zeros(_FRAME, dtype=np.int16)
SILENT_FRAME.flags.writeable = False


class InlineOpusEncoder:
    def __init__(self, complexity: int = COMPLEXITY, *, use_libopus: bool = True) -> None:
        self.complexity = complexity
        self._libopus: libopus.OpusEncoder | None = None
        self._codec: av.AudioCodecContext | None = None
        if use_libopus and libopus.encoder_available():
            self._libopus = libopus.OpusEncoder(_RATE, 1, bitrate=_BIT_RATE, complexity=complexity, application=APPLICATION)
        else:
            self._codec = _pyav_encoder(complexity)
        self._pts = 0  # the PyAV encoder's own input clock (it needs increasing pts)
        self._silent_run: list[bytes] = []  # libopus's packets for the silence so far, newest last
        self._silence: list[bytes] | None = None  # the settled cycle, replayed from _silence_at
        self._silence_at = 0
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
        if self._libopus is None and self._codec is None:
            raise RuntimeError("the encoder is closed")
        silent = samples is SILENT_FRAME or (
            samples.size == _FRAME and int(samples.max()) <= NEAR_SILENCE and int(samples.min()) >= -NEAR_SILENCE
        )
        if silent:
            samples = SILENT_FRAME
        if silent and self._silence is not None:
            payload = self._silence[self._silence_at]
            self._silence_at = (self._silence_at + 1) % len(self._silence)
            self.frames_reused += 1
            return payload
        if not silent:
            self._silence = None  # speech again: silence settles anew after it
            self._silent_run.clear()
        payload = self._encode(samples)
        if silent:
            run = self._silent_run
            run.append(payload)
            if len(run) > MAX_SILENCE_CYCLE * SILENCE_SETTLED:
                del run[0]
            cycle = _settled_cycle(run)
            if cycle:
                self._silence = run[-cycle:]
                self._silence_at = 0
        return payload

    def _encode(self, samples: np.ndarray) -> bytes:
        if samples.dtype != np.int16 or samples.size != _FRAME:
            raise ValueError(f"a frame is {_FRAME} int16 samples, not {samples.size} {samples.dtype}")
        if self._libopus is not None:
            return self._libopus.encode(samples.tobytes(), _FRAME)
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
        if self._libopus is not None:
            self._libopus.close()
            self._libopus = None
        self._codec = None


def _settled_cycle(run: list[bytes]) -> int:
    """The length of the cycle `run` has ended with SILENCE_SETTLED times over (0: none yet)."""
    for length in range(1, MAX_SILENCE_CYCLE + 1):
        span = length * SILENCE_SETTLED
        if len(run) < span:
            return 0
        if all(run[-i] == run[-i - length] for i in range(1, span - length + 1)):
            return length
    return 0


def _pyav_encoder(complexity: int) -> av.AudioCodecContext:
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = _BIT_RATE
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = _RATE
    codec.time_base = TIME_BASE
    codec.options = {"application": "lowdelay", "compression_level": str(complexity)}
    # libopus encodes on the caller's thread. PyAV's default asks FFmpeg for one thread per CPU
    # (thread_count 0) from codecs that can thread: say 1, so no build ever gives each call's
    # encoder a pool of its own.
    codec.thread_count = 1
    codec.thread_type = "NONE"
    return codec  # type: ignore[return-value]
