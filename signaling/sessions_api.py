"""The /api/v1/sessions routes: create, offer/answer, trickle ICE, inspect, hang up."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from media.avatar_service import QUALITIES, AvatarOpened, AvatarRequest
from media.call import CallEnded, CallStateError
from media.call_accounting import AVATAR_USAGE_TYPE
from media.calls import AtCapacity, CallRegistry
from media.sdp_check import InvalidOffer
from signaling import keys
from signaling.auth import Principal, principal_of
from signaling.cluster import MESSAGE_TIMEOUT_S, REQUEST_TIMEOUT_S
from signaling.errors import ApiError, message_text, read_json
from signaling.session_ops import OpResult, SessionRef, run_local
from signaling.turn import session_ice_servers
from signaling.users_api import preferences_of
from storage.preferences import Preferences
from storage.sessions import SessionRateLimited, SessionRecord, SessionRepository, TooManyOpenSessions

routes = web.RouteTableDef()


def _session_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["session_id"])
    except ValueError as exc:
        raise ApiError(404, "session_not_found", "no such session") from exc


async def load_session(request: web.Request) -> tuple[Principal, SessionRecord]:
    """The caller's session named in the path; someone else's is reported exactly like a missing one."""
    principal = principal_of(request)
    sessions: SessionRepository = request.app[keys.SESSIONS]
    record = await sessions.get_for_user(_session_id(request), principal.user_id)
    if record is None:
        raise ApiError(404, "session_not_found", "no such session")
    return principal, record


def _require_open(request: web.Request, record: SessionRecord) -> None:
    if record.status == "ended":
        raise ApiError(409, "session_ended", f"the session has ended ({record.end_reason})")
    registry: CallRegistry = request.app[keys.CALLS]
    if record.status != "created" and owner_elsewhere(request, record) is None and registry.get(record.id) is None:
        raise ApiError(409, "session_not_live", "the session's call is not live on this server")
    if record.status == "created" and record.expires_at < datetime.now(timezone.utc):
        raise ApiError(409, "session_expired", "the session expired before its offer arrived")


@routes.post("/api/v1/sessions")
async def create_session(request: web.Request) -> web.Response:
    """A user session; with `"avatar": true` also its avatar session, made and linked together."""
    body = await read_json(request, allow_empty=True)
    # What the body does not say comes from the caller's preferences (PUT /api/v1/users/me/preferences).
    defaults = await preferences_of(request, principal_of(request).user_id)
    avatar = avatar_request(body, defaults)
    created = await create_user_session(request, avatar, voice_id=session_voice(body, defaults))
    return web.json_response(created.to_json(), status=201)


@dataclass(frozen=True)
class CreatedSession:
    record: SessionRecord
    ice_servers: list[dict[str, Any]]
    avatar: AvatarOpened | None
    agent_session_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "session_id": str(self.record.id),
            "ice_servers": self.ice_servers,
            "expires_at": self.record.expires_at.isoformat(),
        }
        if self.agent_session_id is not None:
            body["agent_session_id"] = self.agent_session_id
        if self.avatar is not None:
            body["avatar"] = self.avatar.to_json()
        return body


async def create_user_session(request: web.Request, avatar: AvatarRequest | None, *, voice_id: str | None = None) -> CreatedSession:
    request.app[keys.DRAINING].refuse_new_call()  # 503 draining
    principal = principal_of(request)
    await request.app[keys.USERS].ensure(principal.user_id)
    # Refused only for what a call cannot do without; an exhausted avatar quota means no avatar.
    await require_quota(request, principal.user_id, request.app[keys.CALLS].accounting.call_usage_types)
    settings = request.app[keys.SETTINGS]
    sessions: SessionRepository = request.app[keys.SESSIONS]
    try:
        record = await sessions.create(
            principal.user_id,
            settings.session_ttl_seconds,
            settings.node_id,
            max_open=settings.limits.max_calls_per_user,
            max_per_minute=settings.limits.rate_limit_sessions_per_minute,
            voice_id=voice_id,
        )
    except TooManyOpenSessions as exc:
        raise ApiError(429, "too_many_calls", f"{exc}: end one (DELETE) or let it expire") from exc
    except SessionRateLimited as exc:
        raise ApiError(
            429, "rate_limited", "too many sessions created in the last minute", retry_after_s=exc.retry_after_s
        ) from exc
    # The agent session and the avatar session are made with the user session, side by side.
    agent_session_id, opened = await asyncio.gather(
        request.app[keys.AGENT_SESSIONS].open(record.id, principal.user_id),
        _open_avatar(request, record, avatar, principal.user_id),
    )
    ice = session_ice_servers(settings.ice_servers, settings.turn, principal.user_id, time.time())
    return CreatedSession(record, ice, opened, agent_session_id)


async def require_quota(request: web.Request, user_id: str, usage_types: Iterable[str]) -> None:
    """403 quota_exceeded naming every type of `usage_types` with nothing left this month."""
    exhausted = await request.app[keys.QUOTAS].exhausted_types(user_id, usage_types)
    if exhausted:
        raise ApiError(403, "quota_exceeded", f"no quota left this month for: {', '.join(exhausted)}")


async def _open_avatar(request: web.Request, record: SessionRecord, avatar: AvatarRequest | None, user_id: str) -> AvatarOpened | None:
    if avatar is None:
        return None
    if await request.app[keys.QUOTAS].exhausted_types(user_id, (AVATAR_USAGE_TYPE,)):
        return AvatarOpened(request.app[keys.AVATARS].engine, "unavailable", error="quota_exceeded")
    # The avatar may live as long as a call offered at the last moment: the sweeper stops it after.
    longest_call_s = request.app[keys.SETTINGS].limits.call.max_call_seconds or 24 * 3600
    expires_at = record.expires_at + timedelta(seconds=longest_call_s)
    return await request.app[keys.AVATARS].open(record.id, avatar, expires_at)


def avatar_request(body: dict[str, Any], defaults: Preferences = Preferences()) -> AvatarRequest | None:
    """`avatar`, `avatar_id`, `quality`, `voice_id` of a session's body; None when no avatar is asked for."""
    wanted = body.get("avatar", defaults.enable_avatar)
    if not isinstance(wanted, bool):
        raise ApiError(400, "invalid_avatar", "`avatar` must be true or false")
    if not wanted:
        return None
    return avatar_fields(body, defaults)


def session_voice(body: dict[str, Any], defaults: Preferences) -> str | None:
    """The TTS voice of the session's call: the body's `voice_id`, else the preferred one (a voice the
    call's TTS does not have leaves it speaking in its own)."""
    voice_id = body.get("voice_id", defaults.voice_id)
    if voice_id is not None and (not isinstance(voice_id, str) or not voice_id.strip() or len(voice_id) > 255):
        raise ApiError(400, "invalid_voice", "`voice_id` must be a non-empty string of at most 255 characters")
    return voice_id.strip() if voice_id else None


def avatar_fields(body: dict[str, Any], defaults: Preferences = Preferences()) -> AvatarRequest:
    avatar_id = body.get("avatar_id", defaults.avatar_id)
    quality, voice_id = body.get("quality", defaults.quality), body.get("voice_id", defaults.voice_id)
    for name, value in (("avatar_id", avatar_id), ("voice_id", voice_id)):
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 255):
            raise ApiError(400, "invalid_avatar", f"`{name}` must be a non-empty string of at most 255 characters")
    if quality not in QUALITIES:
        raise ApiError(400, "invalid_avatar", f"`quality` must be one of: {', '.join(QUALITIES)}")
    return AvatarRequest(avatar_id.strip() if avatar_id else None, quality, voice_id.strip() if voice_id else None)


@routes.post("/api/v1/sessions/{session_id}/offer")
async def post_offer(request: web.Request) -> web.Response:
    request.app[keys.DRAINING].refuse_new_call()  # 503 draining
    principal, record = await load_session(request)
    body = await read_json(request)
    sdp, kind = body.get("sdp"), body.get("type", "offer")
    if not isinstance(sdp, str):
        raise ApiError(400, "invalid_sdp", "`sdp` must be a string")
    if kind != "offer":
        raise ApiError(400, "invalid_sdp", "`type` must be \"offer\"")
    _require_open(request, record)
    registry: CallRegistry = request.app[keys.CALLS]
    try:
        answer = await registry.start_call(record.id, principal.user_id, record.expires_at, sdp)
    except InvalidOffer as exc:
        raise ApiError(400, "invalid_sdp", str(exc)) from exc
    except CallEnded as exc:
        raise ApiError(409, "session_ended", str(exc)) from exc
    except CallStateError as exc:
        raise ApiError(409, "invalid_state", str(exc)) from exc
    except AtCapacity as exc:
        raise ApiError(503, "at_capacity", str(exc), retry_after_s=5) from exc
    return web.json_response({"sdp": answer, "type": "answer"})


@routes.post("/api/v1/sessions/{session_id}/ice")
async def post_ice(request: web.Request) -> web.Response:
    _, record = await load_session(request)
    body = await read_json(request)
    candidate = body.get("candidate")
    sdp_mid = body.get("sdpMid")
    sdp_mline_index = body.get("sdpMLineIndex")
    if not isinstance(candidate, str):
        raise ApiError(400, "invalid_candidate", "`candidate` must be a string (empty for end of candidates)")
    if sdp_mid is not None and not isinstance(sdp_mid, str):
        raise ApiError(400, "invalid_candidate", "`sdpMid` must be a string or null")
    if sdp_mline_index is not None and (not isinstance(sdp_mline_index, int) or isinstance(sdp_mline_index, bool)):
        raise ApiError(400, "invalid_candidate", "`sdpMLineIndex` must be an integer or null")
    _require_open(request, record)
    args = {"candidate": candidate, "sdpMid": sdp_mid, "sdpMLineIndex": sdp_mline_index}
    return op_response(await run_op(request, record, "ice", args))


@routes.post("/api/v1/sessions/{session_id}/messages")
async def post_message(request: web.Request) -> web.Response:
    """A typed turn: the agent replies, the reply is spoken on the call and returned here."""
    _, record = await load_session(request)
    text = await read_text(request)
    _require_open(request, record)
    return op_response(await run_op(request, record, "message", {"text": text}, timeout=MESSAGE_TIMEOUT_S))


async def read_text(request: web.Request) -> str:
    """The body's `text`, stripped: a non-empty string within MAX_MESSAGE_CHARS, else 400 `invalid_text`."""
    max_chars = request.app[keys.SETTINGS].limits.max_message_chars
    return message_text((await read_json(request)).get("text"), "text", "invalid_text", max_chars)


@routes.get("/api/v1/sessions/{session_id}")
async def get_session(request: web.Request) -> web.Response:
    _, record = await load_session(request)
    body = record.to_json()
    status, state = await run_op(request, record, "state", {})
    live = (state or {}).get("call_state") if status == 200 else None
    body["call_state"] = live if live is not None else ("ended" if record.status == "ended" else "new")
    return web.json_response(body)


@routes.delete("/api/v1/sessions/{session_id}")
async def delete_session(request: web.Request) -> web.Response:
    _, record = await load_session(request)
    return op_response(await run_op(request, record, "hangup", {}))


def owner_elsewhere(request: web.Request, record: SessionRecord) -> str | None:
    """The node that holds the session's call, when that is another node."""
    if record.status in ("connecting", "connected") and record.node_id and record.node_id != request.app[keys.SETTINGS].node_id:
        return record.node_id
    return None


def session_ref(record: SessionRecord) -> SessionRef:
    return SessionRef(record.id, record.user_id, record.expires_at)


async def run_op(
    request: web.Request, record: SessionRecord, op: str, args: dict[str, Any], *, timeout: float = REQUEST_TIMEOUT_S
) -> OpResult:
    """The operation on the session's call, here or on the node that holds it: the same answer either way."""
    owner = owner_elsewhere(request, record)
    if owner is not None:
        return await request.app[keys.CLUSTER].request(owner, op, session_ref(record), args, timeout=timeout)
    return await run_local(request.app, op, session_ref(record), args)


def op_response(result: OpResult) -> web.Response:
    status, body = result
    return web.Response(status=status) if body is None else web.json_response(body, status=status)
