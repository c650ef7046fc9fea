"""The /api/v1/sessions routes: create, offer/answer, trickle ICE, inspect, hang up."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from aiohttp import web

from media.call import CallEnded, CallStateError
from media.calls import AtCapacity, CallRegistry
from media.ice_candidates import IceCandidateInit, InvalidCandidate
from media.pipeline import TextNotSupported
from media.sdp_check import InvalidOffer
from media.session_lobby import TooManyCandidates
from signaling import keys
from signaling.auth import Principal, principal_of
from signaling.errors import ApiError, read_json
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
    if record.status != "created" and registry.get(record.id) is None:
        raise ApiError(409, "session_not_live", "the session's call is not live on this server")
    if record.status == "created" and record.expires_at < datetime.now(timezone.utc):
        raise ApiError(409, "session_expired", "the session expired before its offer arrived")


@routes.post("/api/v1/sessions")
async def create_session(request: web.Request) -> web.Response:
    principal = principal_of(request)
    await read_json(request, allow_empty=True)
    await request.app[keys.USERS].ensure(principal.user_id)
    # Refused only for what a call cannot do without; an exhausted avatar quota means no avatar.
    needed = request.app[keys.CALLS].accounting.call_usage_types
    exhausted = await request.app[keys.QUOTAS].exhausted_types(principal.user_id, needed)
    if exhausted:
        raise ApiError(403, "quota_exceeded", f"no quota left this month for: {', '.join(exhausted)}")
    settings = request.app[keys.SETTINGS]
    sessions: SessionRepository = request.app[keys.SESSIONS]
    try:
        record = await sessions.create(
            principal.user_id,
            settings.session_ttl_seconds,
            settings.node_id,
            max_open=settings.limits.max_calls_per_user,
            max_per_minute=settings.limits.rate_limit_sessions_per_minute,
        )
    except TooManyOpenSessions as exc:
        raise ApiError(429, "too_many_calls", f"{exc}: end one (DELETE) or let it expire") from exc
    except SessionRateLimited as exc:
        raise ApiError(
            429, "rate_limited", "too many sessions created in the last minute", retry_after_s=exc.retry_after_s
        ) from exc
    return web.json_response(
        {
            "session_id": str(record.id),
            "ice_servers": request.app[keys.SETTINGS].ice_servers,
            "expires_at": record.expires_at.isoformat(),
        },
        status=201,
    )


@routes.post("/api/v1/sessions/{session_id}/offer")
async def post_offer(request: web.Request) -> web.Response:
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
    principal, record = await load_session(request)
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
    registry: CallRegistry = request.app[keys.CALLS]
    try:
        await registry.add_candidate(
            record.id, principal.user_id, record.expires_at, IceCandidateInit(candidate, sdp_mid, sdp_mline_index)
        )
    except InvalidCandidate as exc:
        raise ApiError(400, "invalid_candidate", str(exc)) from exc
    except TooManyCandidates as exc:
        raise ApiError(429, "too_many_candidates", str(exc)) from exc
    except CallStateError as exc:
        raise ApiError(409, "session_ended", str(exc)) from exc
    return web.Response(status=204)


@routes.post("/api/v1/sessions/{session_id}/messages")
async def post_message(request: web.Request) -> web.Response:
    """A typed turn: the agent replies, the reply is spoken on the call and returned here."""
    _, record = await load_session(request)
    body = await read_json(request)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "invalid_text", "`text` must be a non-empty string")
    max_chars = request.app[keys.SETTINGS].limits.max_message_chars
    if max_chars and len(text) > max_chars:
        raise ApiError(400, "invalid_text", f"`text` is longer than {max_chars} characters")
    _require_open(request, record)
    call = request.app[keys.CALLS].get(record.id)
    if call is None:
        raise ApiError(409, "invalid_state", "the call has not been offered yet")
    try:
        reply = await call.send_text(text.strip())
    except CallStateError as exc:
        raise ApiError(409, "invalid_state", str(exc)) from exc
    except TextNotSupported as exc:
        raise ApiError(409, "text_not_supported", str(exc)) from exc
    return web.json_response({"text": text.strip(), "reply": reply})


@routes.get("/api/v1/sessions/{session_id}")
async def get_session(request: web.Request) -> web.Response:
    _, record = await load_session(request)
    body = record.to_json()
    call = request.app[keys.CALLS].get(record.id)
    body["call_state"] = call.state if call is not None else ("ended" if record.status == "ended" else "new")
    return web.json_response(body)


@routes.delete("/api/v1/sessions/{session_id}")
async def delete_session(request: web.Request) -> web.Response:
    _, record = await load_session(request)
    registry: CallRegistry = request.app[keys.CALLS]
    if not await registry.hang_up(record.id, "hangup"):
        await request.app[keys.SESSIONS].end(record.id, "hangup")
    return web.json_response({"status": "ended"})
