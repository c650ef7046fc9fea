"""libopus itself, through ctypes: the per-frame Opus work of a call without PyAV's packet and frame objects.

PyAV's libopus codec contexts cost per 20 ms frame more than the codec does at the sizes a call uses:
FFmpeg's wrapper always decodes at 48 kHz (it sets the rate itself, whatever was asked), so the voice
pipeline paid for a 48 kHz stereo decode and then a resampler down to 16 kHz mono; and encoding goes
through an AVFrame, FFmpeg's multistream encoder and an AVPacket. libopus decodes natively at 8, 12,
16, 24 and 48 kHz, mono or stereo, and encodes from a plain int16 buffer.

The library is the one PyAV's wheel ships (the very libopus PyAV uses), else the system's.
`available()` says whether one was found; callers keep a PyAV path for when it was not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import platform
import sys
import threading

import av
import numpy as np

from media.opus_steady import SteadyDecodes

RATES = (8_000, 12_000, 16_000, 24_000, 48_000)
APPLICATION_VOIP = 2048
APPLICATION_RESTRICTED_LOWDELAY = 2051  # CELT only: no SILK, 2.5 ms of look-ahead instead of 6.5
_SET_BITRATE = 4002
_SET_VBR = 4006
_SET_COMPLEXITY = 4010
_SET_VBR_CONSTRAINT = 4020
_MAX_PACKET = 1500  # bytes; libopus's own limit for one frame is 1275
_MAX_FRAME_MS = 120  # the longest an Opus packet plays

_lib: ctypes.CDLL | None = None
_lib_error: str | None = None
_lock = threading.Lock()


class OpusError(Exception):
    """libopus refused: a corrupt packet, or a bad setting."""


def _candidates() -> list[str]:
    av_dir = os.path.dirname(av.__file__)
    paths = sorted(glob.glob(os.path.join(av_dir, os.pardir, "av.libs", "libopus*.so*")))  # Linux wheels
    paths += sorted(glob.glob(os.path.join(av_dir, ".dylibs", "libopus*.dylib")))  # macOS wheels
    system = ctypes.util.find_library("opus")
    if system:
        paths.append(system)
    return paths


def _load() -> ctypes.CDLL | None:
    global _lib, _lib_error
    with _lock:
        if _lib is not None or _lib_error is not None:
            return _lib
        for path in _candidates():
            try:
                lib = ctypes.CDLL(path)
                _declare(lib)
            except (OSError, AttributeError) as exc:
                _lib_error = f"{path}: {exc}"
                continue
            _lib, _lib_error = lib, None
            return lib
        _lib_error = _lib_error or "no libopus found beside PyAV or on the system"
        return None


def _declare(lib: ctypes.CDLL) -> None:
    c_int, c_int32, c_void_p, c_char_p = ctypes.c_int, ctypes.c_int32, ctypes.c_void_p, ctypes.c_char_p
    lib.opus_decoder_create.restype = c_void_p
    lib.opus_decoder_create.argtypes = [c_int32, c_int, ctypes.POINTER(c_int)]
    lib.opus_decode.restype = c_int
    lib.opus_decode.argtypes = [c_void_p, c_char_p, c_int32, c_void_p, c_int, c_int]
    lib.opus_decoder_get_size.restype = c_int
    lib.opus_decoder_get_size.argtypes = [c_int]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decoder_destroy.argtypes = [c_void_p]
    lib.opus_encoder_create.restype = c_void_p
    lib.opus_encoder_create.argtypes = [c_int32, c_int, c_int, ctypes.POINTER(c_int)]
    lib.opus_encode.restype = c_int32
    lib.opus_encode.argtypes = [c_void_p, c_char_p, c_int, c_void_p, c_int32]
    lib.opus_encoder_destroy.restype = None
    lib.opus_encoder_destroy.argtypes = [c_void_p]
    lib.opus_encoder_ctl.restype = c_int  # variadic: arguments are passed as typed ctypes values
    lib.opus_strerror.restype = c_char_p
    lib.opus_strerror.argtypes = [c_int]


# opus_encoder_ctl is variadic; ctypes passes variadic integers correctly under the x86-64 and Linux
# arm64 conventions, not Apple arm64's (variadics go on the stack there). The encoder is not used there.
ENCODER_CTL_SAFE = not (sys.platform == "darwin" and platform.machine() == "arm64")


def available() -> bool:
    return _lib is not None or _load() is not None


def encoder_available() -> bool:
    return ENCODER_CTL_SAFE and available()


def unavailable_reason() -> str | None:
    _load()
    return _lib_error


def _library() -> ctypes.CDLL:
    lib = _load()
    if lib is None:
        raise OpusError(f"libopus is not available ({_lib_error})")
    return lib


def _error(lib: ctypes.CDLL, code: int) -> OpusError:
    return OpusError(lib.opus_strerror(code).decode(errors="replace"))


class OpusDecoder:
    """Opus packets -> int16 PCM at `rate` (8/12/16/24/48 kHz), `channels` 1 or 2, interleaved.

    reuse_steady: once libopus has settled on a repeated packet or a short cycle of them (a muted
    microphone), answer them with the samples they gave, exactly what decoding them again would give
    (media.opus_steady).
    """

    def __init__(self, rate: int, channels: int = 1, *, reuse_steady: bool = True) -> None:
        if rate not in RATES or channels not in (1, 2):
            raise ValueError(f"libopus decodes at {RATES} Hz, 1 or 2 channels; not {rate} Hz, {channels}")
        lib = _library()
        self.rate = rate
        self.channels = channels
        error = ctypes.c_int()
        state = lib.opus_decoder_create(rate, channels, ctypes.byref(error))
        if not state or error.value:
            raise _error(lib, error.value)
        self._lib = lib
        self._state: int | None = state
        self._state_size = lib.opus_decoder_get_size(channels)
        self._max_samples = rate * _MAX_FRAME_MS // 1000
        self._buffer = np.zeros(self._max_samples * channels, dtype=np.int16)
        self._pointer = self._buffer.ctypes.data
        self._steady = SteadyDecodes(self._read_state, self._write_state) if reuse_steady else None
        self.reused = 0  # packets answered with their settled samples instead of decoded

    def _read_state(self) -> bytes:
        return ctypes.string_at(self._state, self._state_size)

    def _write_state(self, state: bytes) -> None:
        ctypes.memmove(self._state, state, self._state_size)

    def decode(self, payload: bytes) -> np.ndarray:
        """One packet -> its samples (a view of a buffer reused by the next call: copy to keep it)."""
        if self._state is None:
            raise OpusError("the decoder is closed")
        steady = self._steady
        if steady is not None:
            samples = steady.answer(payload)
            if samples is not None:
                self.reused += 1
                self._buffer[: samples.size] = samples
                return self._buffer[: samples.size]
        out = self._decode(payload)
        if steady is not None:
            steady.learn(payload, out)
        return out

    def _decode(self, payload: bytes) -> np.ndarray:
        samples = self._lib.opus_decode(self._state, payload, len(payload), self._pointer, self._max_samples, 0)
        if samples < 0:
            raise _error(self._lib, samples)
        return self._buffer[: samples * self.channels]

    def close(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state is not None:
            self._lib.opus_decoder_destroy(state)

    def __del__(self) -> None:
        self.close()


class OpusEncoder:
    """int16 PCM frames at `rate` -> Opus packets; VBR, unconstrained (as FFmpeg's libopus wrapper sets it)."""

    def __init__(self, rate: int, channels: int, *, bitrate: int, complexity: int, application: int = APPLICATION_VOIP) -> None:
        if rate not in RATES or channels not in (1, 2):
            raise ValueError(f"libopus encodes at {RATES} Hz, 1 or 2 channels; not {rate} Hz, {channels}")
        lib = _library()
        self.rate = rate
        self.channels = channels
        error = ctypes.c_int()
        state = lib.opus_encoder_create(rate, channels, application, ctypes.byref(error))
        if not state or error.value:
            raise _error(lib, error.value)
        self._lib = lib
        self._state: int | None = state
        self._out = ctypes.create_string_buffer(_MAX_PACKET)
        try:
            self._ctl(_SET_BITRATE, bitrate)
            self._ctl(_SET_COMPLEXITY, complexity)
            self._ctl(_SET_VBR, 1)
            self._ctl(_SET_VBR_CONSTRAINT, 0)
        except OpusError:
            self.close()
            raise

    def _ctl(self, request: int, value: int) -> None:
        code = self._lib.opus_encoder_ctl(ctypes.c_void_p(self._state), ctypes.c_int(request), ctypes.c_int32(value))
        if code < 0:
            raise _error(self._lib, code)

    def encode(self, pcm: bytes, samples: int) -> bytes:
        """`samples` per channel of interleaved int16 `pcm` (2.5-60 ms of it) -> one Opus packet."""
        if self._state is None:
            raise OpusError("the encoder is closed")
        if len(pcm) < samples * self.channels * 2:
            raise ValueError(f"{len(pcm)} bytes hold fewer than {samples} samples of {self.channels} channel(s)")
        size = self._lib.opus_encode(self._state, pcm, samples, self._out, _MAX_PACKET)
        if size < 0:
            raise _error(self._lib, size)
        return self._out.raw[:size]

    def close(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state is not None:
            self._lib.opus_encoder_destroy(state)

    def __del__(self) -> None:
        self.close()
