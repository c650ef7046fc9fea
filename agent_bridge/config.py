"""Which engines to use, read from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    stt_engine: str = "whisper"
    tts_engine: str = "piper"
    agent_engine: str = "local"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "EngineConfig":
        return cls(
            stt_engine=environ.get("STT_ENGINE", "whisper"),
            tts_engine=environ.get("TTS_ENGINE", "piper"),
            agent_engine=environ.get("AGENT_ENGINE", "local"),
        )
