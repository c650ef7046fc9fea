"""Which engines to use and how to set them up, read from the environment once at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from agent_bridge.google_auth import insecure_enabled
from agent_bridge.liveavatar.settings import LiveAvatarSettings

AVATAR_FALLBACKS = ("rendered", "none")


@dataclass(frozen=True)
class EngineConfig:
    """Engine names are checked by agent_bridge.registry, the one place engines are chosen."""

    stt_engine: str = "whisper"
    tts_engine: str = "piper"
    agent_engine: str = "local"
    avatar_engine: str = "rendered"
    # Whisper (offline speech-to-text).
    whisper_cpu_threads: int = 1
    whisper_workers: int = 2  # deciding passes (speculative and final) that run side by side
    # Piper (offline text-to-speech); None means the bundled "joe" voice.
    piper_model_path: str | None = None
    piper_config_path: str | None = None
    piper_cpu_threads: int = 1  # ONNX Runtime intra-op threads of a synthesis (see agent_bridge.piper_tts)
    piper_workers: int = 2  # syntheses that run side by side (replies of calls that answer at once)
    # Google Text-to-Speech (agent_bridge.google_tts checks the voice, language and endpoint at start).
    google_tts_voice: str = "en-US-Chirp3-HD-Charon"
    google_tts_language: str = "en-US"
    google_tts_endpoint: str = "texttospeech.googleapis.com:443"
    google_tts_voices: tuple[str, ...] = ()  # GOOGLE_TTS_VOICES: more voices users may choose, comma-separated
    # Every Google engine: plaintext gRPC without credentials (GOOGLE_API_INSECURE=1), for local fakes only.
    google_api_insecure: bool = False
    # Google Speech-to-Text (STT_ENGINE=google); agent_bridge.google_stt_settings checks them at start.
    google_cloud_project: str | None = None
    google_speech_location: str | None = None  # None: "global", or the location GOOGLE_SPEECH_RECOGNIZER names
    google_speech_recognizer: str | None = None  # None: projects/{project}/locations/{location}/recognizers/_
    google_speech_model: str = "long"
    google_speech_language: str = "en-US"
    google_speech_endpoint: str | None = None  # host:port; None: the location's own endpoint
    # Vertex AI Agent Engine (AGENT_ENGINE=vertex); agent_bridge.vertex_agent checks both at start.
    vertex_agent_engine: str | None = None  # projects/P/locations/L/reasoningEngines/ID
    vertex_api_endpoint: str | None = None  # a base URL; None means the engine's regional endpoint
    # ENGINE_FALLBACK=offline: a call whose cloud engine fails for good goes on with the offline one.
    engine_fallback: str | None = None
    # AVATAR_ENGINE=liveavatar: the service's settings (LIVEAVATAR_*), checked at start.
    liveavatar: LiveAvatarSettings | None = None
    # What a call's video becomes when the LiveAvatar fails: the rendered face, or none.
    avatar_fallback: str = "rendered"

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
            whisper_workers=_positive_int(environ, "WHISPER_WORKERS", defaults.whisper_workers),
            piper_model_path=piper_model,
            piper_config_path=piper_config,
            piper_cpu_threads=_positive_int(environ, "PIPER_CPU_THREADS", defaults.piper_cpu_threads),
            piper_workers=_positive_int(environ, "PIPER_WORKERS", defaults.piper_workers),
            google_tts_voice=_text(environ, "GOOGLE_TTS_VOICE") or defaults.google_tts_voice,
            google_tts_language=_text(environ, "GOOGLE_TTS_LANGUAGE") or defaults.google_tts_language,
            google_tts_endpoint=_text(environ, "GOOGLE_TTS_ENDPOINT") or defaults.google_tts_endpoint,
            google_tts_voices=tuple(v.strip() for v in (_text(environ, "GOOGLE_TTS_VOICES") or "").split(",") if v.strip()),
            google_api_insecure=insecure_enabled(environ),
            google_cloud_project=_text(environ, "GOOGLE_CLOUD_PROJECT"),
            google_speech_location=_text(environ, "GOOGLE_SPEECH_LOCATION"),
            google_speech_recognizer=_text(environ, "GOOGLE_SPEECH_RECOGNIZER"),
            google_speech_model=_text(environ, "GOOGLE_SPEECH_MODEL") or defaults.google_speech_model,
            google_speech_language=_text(environ, "GOOGLE_SPEECH_LANGUAGE") or defaults.google_speech_language,
            google_speech_endpoint=_text(environ, "GOOGLE_SPEECH_ENDPOINT"),
            vertex_agent_engine=_text(environ, "VERTEX_AGENT_ENGINE"),
            vertex_api_endpoint=_text(environ, "VERTEX_API_ENDPOINT"),
            engine_fallback=_fallback(environ),
            liveavatar=LiveAvatarSettings.from_env(environ) if _name(environ, "AVATAR_ENGINE", "") == "liveavatar" else None,
            avatar_fallback=_avatar_fallback(environ),
        )


def _fallback(environ: Mapping[str, str]) -> str | None:
    value = (_text(environ, "ENGINE_FALLBACK") or "off").lower()
    if value not in ("off", "offline"):
        raise ValueError(f"ENGINE_FALLBACK must be offline or off, got {value!r}")
    return None if value == "off" else value


def _avatar_fallback(environ: Mapping[str, str]) -> str:
    value = _name(environ, "AVATAR_FALLBACK", "rendered")
    if value not in AVATAR_FALLBACKS:
        raise ValueError(f"AVATAR_FALLBACK must be rendered or none, got {value!r}")
    return value


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
