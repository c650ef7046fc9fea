"""The load's microphone audio, encoded to Opus once, so a load generator never encodes during a run.

Echo pipelines (what the server sends back is what it heard):
  speaking   a few sentences of espeak-ng speech (real pauses between words and sentences)
  listening  digital silence, one Opus packet every 20 ms (no DTX), as a muted browser microphone sends
The voice pipeline (the speech carries the marker tones the cloud speech fake hears as words):
  speaking   the bot speaks: a short question, then the caller is quiet for QUIET_AFTER_QUESTION_S
             while the bot answers (the bench's TTS fake makes a reply last about that long)
  listening  the bot listens: the sentences, looped without a gap, so the caller talks all the time
             (a pause between sentences that ends a turn gets an answer, cut short as speech resumes)
  muted      the caller's microphone is muted: digital silence, and the bot has nothing to answer
A server whose answer carries Opus's maxplaybackrate (the voice pipeline's 16 kHz) gets what a browser
then sends: the same audio encoded no wider than that (libwebrtc caps its encoder's bandwidth by it).
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


# maxplaybackrate -> the widest audio band worth encoding (FFmpeg's libopus "cutoff", in Hz), as libwebrtc maps it
_CUTOFFS = ((8_000, "4000"), (12_000, "6000"), (16_000, "8000"), (24_000, "12000"))


def opus_packets(samples: np.ndarray, max_playback_hz: int | None = None) -> list[bytes]:
    """One Opus payload per 20 ms: the same settings the server sends with (32 kb/s mono, VoIP), no
    wider than the receiver's `max_playback_hz` asks."""
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = 32_000
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = RATE
    codec.time_base = TIME_BASE
    cutoff = next((band for rate, band in _CUTOFFS if max_playback_hz is not None and max_playback_hz <= rate), None)
    codec.options = {"application": "voip"} if cutoff is None else {"application": "voip", "cutoff": cutoff}
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


QUESTION_S = 1.6
QUIET_AFTER_QUESTION_S = 8.0
MODES = ("speaking", "listening", "muted")


def clip(mode: str, *, voice: bool = False, max_playback_hz: int | None = None) -> list[bytes]:
    """The packets a call loops over, for `mode` (see the module's docstring)."""
    if mode == "muted" or (mode == "listening" and not voice):
        return opus_packets(np.zeros(RATE * 2, np.int16), max_playback_hz)
    if mode == "speaking" and not voice:
        return opus_packets(speech_samples(), max_playback_hz)
    from bench.cloud_fakes import marked  # the fakes' packages, only when asked for

    if mode == "speaking":
        question = marked(speech_samples()[: int(RATE * QUESTION_S)])
        return opus_packets(np.concatenate([question, np.zeros(int(RATE * QUIET_AFTER_QUESTION_S), np.int16)]), max_playback_hz)
    if mode == "listening":
        return opus_packets(marked(speech_samples()), max_playback_hz)
    raise ValueError(f"unknown mode {mode!r}")
