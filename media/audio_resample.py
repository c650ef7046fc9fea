"""Sample-rate conversion at the two audio edges of a call.

Inbound: decoded WebRTC frames (any rate, layout, sample format) -> 16 kHz mono int16 for VAD and STT.
Outbound: TTS PCM at the voice's rate -> 48 kHz mono int16 for the paced WebRTC track.

Both wrap libswresample through PyAV. Measured against a numpy downmix + 96-tap polyphase decimator
for 48k -> 16k it is faster (about 11 us vs 17 us per 20 ms frame), needs no filter design of our
own, suppresses 20 kHz to below one LSB, and is time-exact: output sample k is input time k / rate
(the filter's look-ahead is held back as ~1 ms of buffered output, not applied as a time shift).
The converters run on the caller's thread (media.av_resampler): PyAV's own AudioResampler gives
every instance an idle FFmpeg thread pool.
"""

from __future__ import annotations

import av
import numpy as np

from media.av_resampler import AudioConverter

VAD_RATE = 16_000
WEBRTC_RATE = 48_000

_EMPTY = np.zeros(0, dtype=np.int16)
_EMPTY.flags.writeable = False


def _samples_of(frame: av.AudioFrame) -> np.ndarray:
    """A packed mono s16 frame's samples, read-only, without a copy (to_ndarray copies, at 6x the cost)."""
    samples = np.frombuffer(frame.planes[0], dtype=np.int16, count=frame.samples)
    samples.flags.writeable = False
    return samples


def _pcm(frames: list[av.AudioFrame]) -> np.ndarray:
    """Mono s16 frames as one 1-D int16 array (no copy in the usual one-frame case)."""
    if not frames:
        return _EMPTY
    if len(frames) == 1:
        return frames[0].to_ndarray().reshape(-1)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


class InboundResampler:
    """Decoded inbound audio -> mono int16 at `rate` (16 kHz by default). One per stream.

    libswresample keeps filter history between frames, so frame boundaries are seamless and the
    output count never drifts: after N input samples at R Hz exactly N * rate / R samples have been
    produced, minus `buffered_samples` (~16 at 48k -> 16k) still waiting for look-ahead.
    A mid-stream change of rate, layout or format (renegotiation) drains the old converter first.
    Frames already at `rate`, mono s16 (Opus decoded at that rate, media.rtp_receive_path) pass as
    they are: their samples, read-only, no converter.
    """

    def __init__(self, rate: int = VAD_RATE) -> None:
        self.rate = rate
        self.output_samples = 0
        self._resampler: AudioConverter | None = None
        self._source: tuple[int, str, str] | None = None
        self._passthrough = (rate, "s16", "mono")
        # Input consumed since the current source began, and the output count at that moment.
        self._source_rate = rate
        self._source_input = 0
        self._source_base = 0

    def resample(self, frame: av.AudioFrame) -> np.ndarray:
        """One decoded frame in, whatever 16 kHz mono int16 samples are ready out."""
        source = (frame.sample_rate, frame.format.name, frame.layout.name)
        if source == self._passthrough:  # already as wanted
            return self.native(_samples_of(frame))
        if source != self._source:
            drained = self.flush()
            self._start_source(source)
        else:
            drained = _EMPTY
        self._source_input += frame.samples
        assert self._resampler is not None
        out = _pcm(self._resampler.convert(frame))
        if drained.size:
            out = np.concatenate((drained, out))
        self.output_samples += out.size - drained.size
        return out

    def native(self, samples: np.ndarray) -> np.ndarray:
        """Samples already mono int16 at `rate` (Opus decoded there): passed on as they are, counted."""
        drained = _EMPTY
        if self._source != self._passthrough:
            drained = self.flush()
            self._start_source(self._passthrough)
        self._source_input += samples.size
        self.output_samples += samples.size
        return np.concatenate((drained, samples)) if drained.size else samples

    def flush(self) -> np.ndarray:
        """Drain the look-ahead tail (end of stream); the next frame starts a fresh converter."""
        if self._resampler is None:
            self._source = None
            return _EMPTY
        tail = _pcm(self._resampler.convert(None))
        self.output_samples += tail.size
        self._resampler = None
        self._source = None
        return tail

    def close(self) -> None:
        """Free the converter now (end of call) rather than whenever the call's objects are collected."""
        if self._resampler is not None:
            self._resampler.close()
            self._resampler = None
            self._source = None

    @property
    def buffered_samples(self) -> int:
        """Output samples owed for input already consumed (the converter's look-ahead)."""
        owed = self._source_input * self.rate // self._source_rate
        return self._source_base + owed - self.output_samples

    def _start_source(self, source: tuple[int, str, str]) -> None:
        self._source = source
        self._source_rate = source[0]
        self._source_input = 0
        self._source_base = self.output_samples
        self._resampler = None if source == self._passthrough else AudioConverter(format="s16", layout="mono", rate=self.rate)


class OutboundResampler:
    """Mono int16 PCM at `input_rate` (e.g. Piper's 22050 Hz) -> mono int16 at 48 kHz.

    Stateful across chunks of any size, so splitting a stream changes nothing: no clicks at chunk
    boundaries and no drift. Call `flush` at the end of an utterance to get its last samples.
    """

    def __init__(self, input_rate: int, output_rate: int = WEBRTC_RATE) -> None:
        if input_rate <= 0 or output_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.input_rate = input_rate
        self.output_rate = output_rate
        self._resampler: AudioConverter | None = None
        self._odd_byte = b""  # a byte stream may split a 16-bit sample between chunks

    def resample(self, pcm: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
        samples = self._as_int16(pcm)
        if samples.size == 0:
            return _EMPTY
        if self.input_rate == self.output_rate:
            return samples.copy()
        if self._resampler is None:
            self._resampler = AudioConverter(format="s16", layout="mono", rate=self.output_rate)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.input_rate
        return _pcm(self._resampler.convert(frame))

    def flush(self) -> np.ndarray:
        """The utterance's remaining samples; the converter then starts fresh for the next one."""
        self._odd_byte = b""
        if self._resampler is None:
            return _EMPTY
        tail = _pcm(self._resampler.convert(None))
        self._resampler = None
        return tail

    def reset(self) -> None:
        """Forget everything buffered (barge-in): the next chunk starts a new stream."""
        self.close()
        self._odd_byte = b""

    def close(self) -> None:
        """Free the converter now; the next chunk starts a new stream."""
        if self._resampler is not None:
            self._resampler.close()
            self._resampler = None

    def _as_int16(self, pcm: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
        if isinstance(pcm, np.ndarray):
            if pcm.dtype != np.int16:
                raise ValueError(f"expected int16 samples, got {pcm.dtype}")
            return np.ascontiguousarray(pcm.reshape(-1))
        data = self._odd_byte + bytes(pcm) if self._odd_byte else bytes(pcm)
        whole = len(data) & ~1
        self._odd_byte = data[whole:]
        return np.frombuffer(data, dtype=np.int16, count=whole // 2)
