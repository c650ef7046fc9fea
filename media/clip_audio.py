"""Whole audio clips of the REST voice routes: decoding uploads to PCM, encoding speech as WAV or Ogg/Opus.

Blocking (PyAV/FFmpeg): callers run these in a worker thread. The demuxer is chosen from the clip's
own magic bytes among WAV, Ogg and Matroska/WebM, never probed by FFmpeg: probing would let an
upload pick any demuxer, playlists that open other files or URLs included.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import av
import numpy as np

OPUS_RATE = 48_000  # libopus encodes at 48 kHz (or its divisors); 48 kHz keeps everything the TTS made
_OPUS_BIT_RATE = 32_000  # mono speech: transparent at 32 kb/s
_OPUS_FRAME = 960  # 20 ms at 48 kHz
# PCM in WAV, Opus in Ogg and WebM: what browsers record and what the routes promise.
_CODECS = {"wav": "pcm_", "ogg": "opus", "matroska": "opus"}


class InvalidClip(Exception):
    """The bytes are not a WAV, Ogg/Opus or WebM/Opus clip we can decode; the message says why."""


class ClipTooLong(Exception):
    def __init__(self, max_seconds: float) -> None:
        super().__init__(f"the clip is longer than {max_seconds:g} seconds")
        self.max_seconds = max_seconds


@dataclass(frozen=True)
class DecodedClip:
    pcm: bytes  # mono int16 little-endian at `rate`
    rate: int

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def duration_us(self) -> int:
        return self.samples * 1_000_000 // self.rate


def sniff_container(data: bytes) -> str | None:
    """The FFmpeg demuxer of the clip by its magic bytes: wav, ogg, matroska (WebM); None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"\x1a\x45\xdf\xa3":  # the EBML header of Matroska and WebM
        return "matroska"
    return None


def decode_clip(data: bytes, rate: int, max_seconds: float) -> DecodedClip:
    """The clip's first audio stream as mono int16 at `rate`; stops decoding as soon as it passes max_seconds."""
    container_format = sniff_container(data)
    if container_format is None:
        raise InvalidClip("the body is not a WAV, Ogg or WebM file")
    max_samples = int(max_seconds * rate)
    out = bytearray()
    try:
        with av.open(io.BytesIO(data), mode="r", format=container_format) as container:
            if not container.streams.audio:
                raise InvalidClip("the file has no audio stream")
            stream = container.streams.audio[0]
            codec = stream.codec_context.name
            if not codec.startswith(_CODECS[container_format]):
                raise InvalidClip(f"the audio is {codec}; WAV must hold PCM, Ogg and WebM must hold Opus")
            stream.thread_type = "NONE"  # one clip, one thread: the request already runs in a worker
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    out += _pcm_of(converted)
                if len(out) // 2 > max_samples:
                    raise ClipTooLong(max_seconds)
            for converted in resampler.resample(None):
                out += _pcm_of(converted)
    except av.FFmpegError as exc:
        raise InvalidClip(f"the audio cannot be decoded: {exc.strerror or type(exc).__name__}") from exc
    except (ValueError, OSError, EOFError) as exc:  # PyAV's own complaints about a broken file
        raise InvalidClip("the audio cannot be decoded") from exc
    if len(out) // 2 > max_samples:
        raise ClipTooLong(max_seconds)
    if not out:
        raise InvalidClip("the file holds no audio")
    return DecodedClip(bytes(out), rate)


def _pcm_of(frame: av.AudioFrame) -> bytes:
    return bytes(frame.planes[0])[: frame.samples * 2]  # planes may be padded past the samples


def encode_wav(pcm: bytes, rate: int) -> bytes:
    """Mono int16 PCM as a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm)
    return buffer.getvalue()


def encode_ogg_opus(pcm: bytes, rate: int) -> bytes:
    """Mono int16 PCM at `rate` as an Ogg/Opus file (48 kHz, 20 ms frames)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=OPUS_RATE, layout="mono")
        stream.bit_rate = _OPUS_BIT_RATE
        stream.thread_type = "NONE"
        resampler = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        source = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        source.sample_rate = rate
        resampled = np.concatenate(
            [f.to_ndarray().reshape(-1) for f in [*resampler.resample(source), *resampler.resample(None)]]
            or [np.zeros(0, np.int16)]
        )
        # libopus takes exactly one frame size: cut into 20 ms frames, the last padded with silence.
        padded = np.zeros(-(-resampled.size // _OPUS_FRAME) * _OPUS_FRAME, np.int16)
        padded[: resampled.size] = resampled
        for pts in range(0, padded.size, _OPUS_FRAME):
            frame = av.AudioFrame.from_ndarray(padded[pts : pts + _OPUS_FRAME].reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts = OPUS_RATE, pts
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()
