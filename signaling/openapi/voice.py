"""Speech over plain HTTP, outside any call: transcribe a clip, synthesize a text."""

from __future__ import annotations

from signaling.openapi.schema import STRING, json_content, nullable, obj, operation

TAG = "voice"
_BINARY = {"type": "string", "contentMediaType": "application/octet-stream"}
_CLIP = {media: {"schema": _BINARY} for media in ("audio/wav", "audio/x-wav", "audio/ogg", "audio/webm", "application/octet-stream")}
_ENGINES = "engine_unavailable (PIPELINE=loopback runs no engines)"

OPERATIONS = {
    ("POST", "/api/v1/voice/transcribe"): operation(
        "Transcribe a WAV, Ogg/Opus or WebM/Opus clip (metered as stt_seconds)",
        tag=TAG,
        body_content=_CLIP,
        ok={200: ("the text", json_content(obj({"text": STRING, "duration_seconds": {"type": "number", "minimum": 0}})))},
        errors={
            400: "invalid_audio", 403: "quota_exceeded", 413: "clip_too_long", 415: "unsupported_media_type",
            502: "engine_failed", 503: _ENGINES,
        },
    ),
    ("POST", "/api/v1/voice/synthesize"): operation(
        "Synthesize a text to audio/wav, or Ogg/Opus with Accept: audio/ogg (metered as tts_characters)",
        tag=TAG,
        body=obj({"text": {"type": "string", "minLength": 1}, "voice_id": nullable(STRING)}, required=["text"]),
        ok={
            200: (
                "the speech",
                {"audio/wav": {"schema": _BINARY}, "audio/ogg": {"schema": _BINARY}},
            )
        },
        errors={
            400: "invalid_text, invalid_voice", 403: "quota_exceeded", 406: "not_acceptable",
            502: "engine_failed", 503: _ENGINES,
        },
    ),
}

