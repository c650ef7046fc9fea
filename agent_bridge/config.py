"""Which engines to use and how to set them up, read from the environment once at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    """Engine names are checked by agent_bridge.registry, the one place engines are chosen."""

    stt_engine: str = "whisper"
    tts_engine: str = "piper"
    agent_engine: str = "local"
    avatar_engine: str = "rendered"
    # Whisper (offline speech-to-text).
    whisper_cpu_threads: int = 1
    # Piper (offline text-to-speech); None means the bundled "joe" voice.
    piper_model_path: str | None = None
    piper_config_path: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> EngineConfig:
        defaults = cls()
        piper_model = _text(environ, "PIPER_VOICE")
        piper_config = _text(environ, "PIPER_VOICE_CONFIG")
        if piper_model and not piper_config:
            piper_config = piper_model + ".json"  # Piper's own convention for voice files
        return cls(
            stt_engine=_name(environ, "STT_ENGINE", defaults.stt_engine),
            tts_engine=_name(environ, "TTS_ENGINE", defaults.tts_engine),
            agent_engine=_name(environ, "AGENT_ENGINE", defaults.agent_engine),
            avatar_engine=_name(environ, "AVATAR_ENGINE", defaults.avatar_engine),
            whisper_cpu_threads=_positive_int(environ, "WHISPER_CPU_THREADS", defaults.whisper_cpu_threads),
            piper_model_path=piper_model,
            piper_config_path=piper_config,
        )


def _text(environ: Mapping[str, str], key: str) -> str | None:
    value = environ.get(key, "").strip()
    return value or None


def _name(environ: Mapping[str, str], key: str, default: str) -> str:
    return (_text(environ, key) or default).lower()


def _positive_int(environ: Mapping[str, str], key: str, default: int) -> int:
    raw = _text(environ, key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{key} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{key} must be a positive integer, got {raw!r}")
    return value
