"""The load's microphone audio, encoded to Opus once, so a load generator never encodes during a run.

Speaking: a few sentences of espeak-ng speech (real pauses between words and sentences).
Listening: digital silence, still one Opus packet every 20 ms (no DTX), as a muted browser microphone sends.
"""

from __future__ import annotations

import fractions
import io
import subprocess
import wave

import av
import numpy as np

RATE = 48_000
FRAME = 960  # 20 ms
TIME_BASE = fractions.Fraction(1, RATE)
_TEXT = (
    "Hello, I would like to check the status of my order. It was placed last Tuesday, "
    "and the tracking page has not changed since. Could you tell me when it will arrive? Thank you."
)


def speech_samples() -> np.ndarray:
    """espeak-ng's voice, as 48 kHz mono int16."""
    wav = subprocess.run(["espeak-ng", "--stdout", "-s", "160", _TEXT], check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        rate = reader.getframerate()
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), np.int16)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame) + resampler.resample(None)]
    return np.concatenate(out).astype(np.int16)


def opus_packets(samples: np.ndarray) -> list[bytes]:
    """One Opus payload per 20 ms: the same settings the server sends with (32 kb/s mono, VoIP)."""
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = 32_000
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = RATE
    codec.time_base = TIME_BASE
    codec.options = {"application": "voip"}
    packets: list[bytes] = []
    usable = samples[: samples.size // FRAME * FRAME]
    for index, chunk in enumerate(usable.reshape(-1, FRAME)):
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = index * FRAME
        frame.time_base = TIME_BASE
        packets.extend(bytes(p) for p in codec.encode(frame))
    packets.extend(bytes(p) for p in codec.encode(None))
    return packets


def clip(mode: str, *, voice: bool = False) -> list[bytes]:
    """The packets a call loops over: `speaking` (speech with its pauses) or `listening` (silence).

    voice: speech for the voice pipeline on the cloud fakes: with the marker tones the speech fake hears
    as words, and 3 s of silence after it, so every pass is a turn the bot answers while the caller waits.
    """
    if mode == "speaking" and voice:
        from bench.cloud_fakes import marked  # the fakes' packages, only when asked for

        return opus_packets(np.concatenate([marked(speech_samples()), np.zeros(RATE * 3, np.int16)]))
    if mode == "speaking":
        return opus_packets(speech_samples())
    if mode == "listening":
        return opus_packets(np.zeros(RATE * 2, np.int16))
    raise ValueError(f"unknown mode {mode!r}")
