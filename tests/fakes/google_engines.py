"""The server's engines pointed at the Google fakes: STT and TTS on local gRPC fakes, spoken to in plaintext."""

from __future__ import annotations

from typing import Any

from agent_bridge.config import EngineConfig
from tests.fakes.speech_fake import FakeSpeech
from tests.fakes.tts_fake import FakeTextToSpeech


def google_fakes_config(speech: FakeSpeech, tts: FakeTextToSpeech, **more: Any) -> EngineConfig:
    """Google STT and TTS on these fakes, no avatar; `more` adds or overrides fields (the agent, voices)."""
    fields: dict[str, Any] = {
        "stt_engine": "google",
        "google_cloud_project": "demo-project",
        "google_speech_endpoint": speech.endpoint,
        "tts_engine": "google",
        "google_tts_endpoint": tts.endpoint,
        "google_api_insecure": True,
        "avatar_engine": "none",
    }
    return EngineConfig(**{**fields, **more})
