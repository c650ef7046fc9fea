"""The caller as a user: plan, limits and preferences; and the catalogues of voices and avatars to choose from."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web

from agent_bridge.interfaces import TextToSpeech
from media.avatar_service import QUALITIES
from signaling import keys
from signaling.auth import principal_of
from signaling.errors import ApiError, read_json
from storage.preferences import PREFERENCE_FIELDS, Preferences
from storage.usage import DEFAULT_PLAN, presented

routes = web.RouteTableDef()

_MAX_ID_CHARS = 255  # the columns' size


def _tts(app: web.Application) -> TextToSpeech | None:
    engines = app[keys.ENGINES]
    return engines.tts if engines is not None else None


def voice_ids(app: web.Application) -> list[str]:
    """What a voice_id may name: the configured TTS engine's voices, its default first."""
    tts = _tts(app)
    return [voice.voice_id for voice in tts.voices()] if tts is not None else []


def avatar_ids(app: web.Application) -> list[str]:
    return [avatar.avatar_id for avatar in app[keys.AVATARS].engines.avatars()]


async def preferences_of(request: web.Request, user_id: str) -> Preferences:
    """The user's preferences as new sessions take them: an id the catalogues no longer hold is dropped."""
    stored = await request.app[keys.PREFERENCES].get(user_id)
    if stored.avatar_id is not None and stored.avatar_id not in avatar_ids(request.app):
        stored = replace(stored, avatar_id=None)
    if stored.voice_id is not None and stored.voice_id not in voice_ids(request.app):
        stored = replace(stored, voice_id=None)
    return stored


@routes.get("/api/v1/users/me")
async def get_me(request: web.Request) -> web.Response:
    principal = principal_of(request)
    plan = await request.app[keys.USERS].plan_of(principal.user_id)
    limits = await request.app[keys.QUOTAS].limits(principal.user_id)
    preferences = await request.app[keys.PREFERENCES].get(principal.user_id)
    saved = await request.app[keys.PREFERENCES].saved(principal.user_id)
    return web.json_response({
        "user_id": principal.user_id,
        "plan": plan or DEFAULT_PLAN,
        "limits": {usage_type: presented(usage_type, limit) for usage_type, limit in limits.items()},
        "preferences": preferences.to_json(),
        "preferences_saved": saved,
    })  # fmt: skip


@routes.put("/api/v1/users/me/preferences")
async def put_preferences(request: web.Request) -> web.Response:
    """Any subset of the preferences; the others keep their stored values."""
    principal = principal_of(request)
    changes = _checked_preferences(request.app, await read_json(request))
    stored = await request.app[keys.PREFERENCES].update(principal.user_id, changes)
    return web.json_response(stored.to_json())


def _checked_preferences(app: web.Application, body: dict[str, Any]) -> dict[str, Any]:
    """The body's preferences, each checked against its catalogue; 400 invalid_preferences names the first fault."""
    unknown = sorted(set(body) - set(PREFERENCE_FIELDS))
    if unknown:
        raise _invalid(f"unknown field {unknown[0]!r}; the preferences are: {', '.join(PREFERENCE_FIELDS)}")
    if "quality" in body and body["quality"] not in QUALITIES:
        raise _invalid(f"`quality` must be one of: {', '.join(QUALITIES)}")
    if "enable_avatar" in body and not isinstance(body["enable_avatar"], bool):
        raise _invalid("`enable_avatar` must be true or false")
    for name, known in (("avatar_id", avatar_ids(app)), ("voice_id", voice_ids(app))):
        if name not in body or body[name] is None:
            continue
        value = body[name]
        if not isinstance(value, str) or not value or len(value) > _MAX_ID_CHARS:
            raise _invalid(f"`{name}` must be null or a non-empty string of at most {_MAX_ID_CHARS} characters")
        if value not in known:
            choices = ", ".join(known) if known else "none on this server"
            raise _invalid(f"unknown {name} {value!r}; choose one of: {choices}")
    return dict(body)


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_preferences", message)


@routes.get("/api/v1/voices")
async def list_voices(request: web.Request) -> web.Response:
    principal_of(request)
    tts = _tts(request.app)
    voices = tts.voices() if tts is not None else []
    return web.json_response({
        "voices": [
            {"voice_id": v.voice_id, "name": v.name, "language": v.language, "engine": tts.name if tts else None}
            for v in voices
        ],
        "default_voice_id": voices[0].voice_id if voices else None,
    })  # fmt: skip


@routes.get("/api/v1/avatars")
async def list_avatars(request: web.Request) -> web.Response:
    principal_of(request)
    engines = request.app[keys.AVATARS].engines
    avatars = engines.avatars()
    return web.json_response({
        "avatars": [{"avatar_id": a.avatar_id, "name": a.name, "engine": engines.engine} for a in avatars],
        "default_avatar_id": avatars[0].avatar_id if avatars else None,
    })  # fmt: skip
