"""Speech over plain HTTP, outside any call: transcribe an uploaded clip, synthesize text to a WAV or Ogg/Opus file.

Both go through the node's configured engines (the ones calls use) and are metered per user in the
monthly ledger: `stt_seconds` is the clip's duration, `tts_characters` the characters synthesized.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from agent_bridge.interfaces import EngineError, SpeechToText, TextToSpeech
from agent_bridge.registry import Engines
from media.clip_audio import ClipTooLong, InvalidClip, decode_clip, encode_ogg_opus, encode_wav
from signaling import keys
from signaling.auth import principal_of
from signaling.errors import ApiError, message_text, read_json
from signaling.users_api import preferences_of

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

STT_RATE = 16_000  # what every SpeechToText engine takes (agent_bridge.interfaces)
_CLIP_TYPES = frozenset({
    "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/ogg", "audio/opus", "audio/webm",
    "video/webm", "application/ogg", "application/octet-stream",
})  # fmt: skip
_READ_CHUNK = 64 * 1024


def _engines(request: web.Request) -> Engines:
    engines = request.app[keys.ENGINES]
    if engines is None:
        raise ApiError(503, "engine_unavailable", "this server runs no speech engines (PIPELINE=loopback)")
    return engines


async def _require_quota(request: web.Request, user_id: str, usage_type: str, amount: int) -> None:
    """403 quota_exceeded unless the month has `amount` left of the type (at least something, for 0)."""
    period = (await request.app[keys.USAGE].period_usage(user_id))[usage_type]
    if period.remaining is not None and period.remaining < max(amount, 1):
        raise ApiError(403, "quota_exceeded", f"not enough quota left this month for: {usage_type}")


async def read_clip(request: web.Request, max_bytes: int) -> bytes:
    """The raw body, at most max_bytes: this route's own limit, above the app's client_max_size (which
    only request.read() enforces, so the stream is read here directly and cut off past the limit)."""
    media_type = request.content_type if request.headers.get("Content-Type") else "application/octet-stream"
    if media_type not in _CLIP_TYPES:
        raise ApiError(415, "unsupported_media_type", "send the clip as audio/wav, audio/ogg, audio/webm or application/octet-stream")
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "body_too_large", f"the body is larger than {max_bytes} bytes")
    body = bytearray()
    while chunk := await request.content.read(_READ_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, "body_too_large", f"the body is larger than {max_bytes} bytes")
    if not body:
        raise ApiError(400, "invalid_audio", "the body is empty: send a WAV, Ogg/Opus or WebM/Opus clip")
    return bytes(body)


@routes.post("/api/v1/voice/transcribe")
async def transcribe(request: web.Request) -> web.Response:
    principal = principal_of(request)
    engines = _engines(request)
    settings = request.app[keys.SETTINGS]
    await _require_quota(request, principal.user_id, "stt_seconds", 0)  # before the upload is even read
    data = await read_clip(request, settings.max_clip_bytes)
    try:
        clip = await asyncio.to_thread(decode_clip, data, STT_RATE, settings.max_clip_seconds)
    except InvalidClip as exc:
        raise ApiError(400, "invalid_audio", str(exc)) from exc
    except ClipTooLong as exc:
        raise ApiError(413, "clip_too_long", str(exc)) from exc
    await _require_quota(request, principal.user_id, "stt_seconds", clip.duration_us)
    text = await _transcribe(engines, clip.pcm)
    await request.app[keys.USAGE].add_usage(principal.user_id, "stt_seconds", clip.duration_us)
    return web.json_response({"text": text, "duration_seconds": clip.duration_us / 1_000_000})


async def _transcribe(engines: Engines, pcm: bytes) -> str:
    """The configured engine's text; with ENGINE_FALLBACK=offline the offline engine's if it fails."""
    fallback = engines.fallback.get("stt")
    try:
        return await engines.stt.transcribe(pcm)
    except EngineError as exc:
        if not isinstance(fallback, SpeechToText):
            raise ApiError(502, "engine_failed", f"speech-to-text failed: {exc.message}") from exc
        log.warning("REST transcription falls back to %s: %s", fallback.name, exc)
    try:
        return await fallback.transcribe(pcm)
    except EngineError as exc:
        raise ApiError(502, "engine_failed", f"speech-to-text failed: {exc.message}") from exc


@routes.post("/api/v1/voice/synthesize")
async def synthesize(request: web.Request) -> web.Response:
    """Body {"text", "voice_id"?}; the voice defaults to the caller's preferred one, then the engine's own."""
    principal = principal_of(request)
    engines = _engines(request)
    body = await read_json(request)
    text = message_text(body.get("text"), "text", "invalid_text", request.app[keys.SETTINGS].limits.max_message_chars)
    ogg = _wants_ogg(request)
    tts = _voice(engines.tts, body.get("voice_id", None), (await preferences_of(request, principal.user_id)).voice_id)
    await _require_quota(request, principal.user_id, "tts_characters", len(text))
    try:
        pcm = b"".join([chunk async for chunk in tts.synthesize(text)])
    except EngineError as exc:
        raise ApiError(502, "engine_failed", f"text-to-speech failed: {exc.message}") from exc
    await request.app[keys.USAGE].add_usage(principal.user_id, "tts_characters", len(text))
    if ogg:
        return web.Response(body=await asyncio.to_thread(encode_ogg_opus, pcm, tts.sample_rate), content_type="audio/ogg")
    return web.Response(body=await asyncio.to_thread(encode_wav, pcm, tts.sample_rate), content_type="audio/wav")


def _voice(tts: TextToSpeech, asked: object, preferred: str | None) -> TextToSpeech:
    """The engine in the asked voice (400 invalid_voice if it has none such), else the preferred one."""
    if asked is not None:
        if not isinstance(asked, str):
            raise ApiError(400, "invalid_voice", "`voice_id` must be a string")
        try:
            return tts.with_voice(asked)
        except ValueError as exc:
            known = ", ".join(voice.voice_id for voice in tts.voices())
            raise ApiError(400, "invalid_voice", f"unknown voice_id {asked!r}; choose one of: {known}") from exc
    if preferred is not None:
        with contextlib.suppress(ValueError):
            return tts.with_voice(preferred)
    return tts


def _wants_ogg(request: web.Request) -> bool:
    """Accept: audio/ogg picks Ogg/Opus; WAV otherwise. An Accept that allows neither is 406."""
    accept = request.headers.get("Accept", "").strip()
    if not accept:
        return False
    ranges = {}
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                with contextlib.suppress(ValueError):
                    quality = float(value)
        ranges[media.strip().lower()] = quality
    ogg = max(ranges.get("audio/ogg", 0.0), ranges.get("audio/opus", 0.0))
    wav = max(ranges.get(t, 0.0) for t in ("audio/wav", "audio/x-wav", "audio/wave"))
    anything = max(ranges.get("audio/*", 0.0), ranges.get("*/*", 0.0))
    if max(ogg, wav, anything) <= 0:
        raise ApiError(406, "not_acceptable", "the speech comes as audio/wav or audio/ogg")
    # Named beats a wildcard of the same weight; between the two named, WAV on a tie.
    return ogg > wav and ogg >= anything
