"""The avatar session routes of the product plan's first API, on top of the user session they belong to.

An avatar session is the avatar side of a user session: `start` makes both (and links them),
`speak` has the avatar say a text on the live call, `DELETE` ends the call and so all of it.
The URL and the token in `start`'s answer are this server's own: the browser never meets HeyGen.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from signaling import keys
from signaling.auth import principal_of
from signaling.errors import ApiError, read_json
from signaling.sessions_api import avatar_fields, create_user_session, op_response, read_text, run_op
from signaling.users_api import preferences_of
from storage.avatar_sessions import AvatarSessionRecord
from storage.sessions import SessionRecord

routes = web.RouteTableDef()


@routes.post("/api/v1/avatar/sessions/start")
async def start_avatar_session(request: web.Request) -> web.Response:
    """`{avatar_id, quality, voice_id}` -> the avatar session and the user session that streams it."""
    body = await read_json(request, allow_empty=True)
    defaults = await preferences_of(request, principal_of(request).user_id)  # what the body does not say
    asked = avatar_fields(body, defaults)
    created = await create_user_session(request, asked, voice_id=asked.voice_id)
    avatar = created.avatar
    assert avatar is not None
    if avatar.avatar_session_id is None:
        # Nothing to stream: the user session made for it goes at once.
        await request.app[keys.SESSIONS].end(created.record.id, "avatar_unavailable")
        if avatar.error == "quota_exceeded":
            raise ApiError(403, "quota_exceeded", "no avatar quota left this month")
        raise ApiError(502, "avatar_unavailable", f"the avatar service could not start a session: {avatar.error}")
    principal = principal_of(request)
    session = created.record
    ttl = max(1, int((session.expires_at - session.created_at).total_seconds()))
    # Our own token for the user session's routes, valid while the session may be offered.
    token = request.app[keys.TOKENS].issue(principal.user_id, ttl)
    store = request.app[keys.AVATARS].store
    if store is not None:
        await store.set_avatar_link(session.id, avatar.avatar_session_id, avatar.status, token, session.expires_at)
    return web.json_response(
        {
            "avatar_session_id": str(avatar.avatar_session_id),
            "heygen_session_id": avatar.heygen_session_id,
            "streaming_url": f"{request.scheme}://{request.host}/api/v1/sessions/{session.id}",
            "session_token": token,
            "expires_at": session.expires_at.isoformat(),
            "session_id": str(session.id),
            "ice_servers": created.ice_servers,
            "avatar": avatar.to_json(),
        },
        status=201,
    )


async def _load(request: web.Request) -> tuple[AvatarSessionRecord, SessionRecord]:
    """The caller's avatar session named in the path and its user session; anyone else's is a 404."""
    try:
        avatar_session_id = uuid.UUID(request.match_info["avatar_session_id"])
    except ValueError as exc:
        raise ApiError(404, "avatar_session_not_found", "no such avatar session") from exc
    principal = principal_of(request)
    store = request.app[keys.AVATARS].store
    record = await store.get(avatar_session_id) if store is not None else None
    session = None
    if record is not None and record.user_session_id is not None:
        session = await request.app[keys.SESSIONS].get_for_user(record.user_session_id, principal.user_id)
    if record is None or session is None:
        raise ApiError(404, "avatar_session_not_found", "no such avatar session")
    return record, session


@routes.get("/api/v1/avatar/sessions/{avatar_session_id}")
async def get_avatar_session(request: web.Request) -> web.Response:
    record, session = await _load(request)
    return web.json_response(_describe(record, session))


@routes.post("/api/v1/avatar/sessions/{avatar_session_id}/speak")
async def speak(request: web.Request) -> web.Response:
    """The avatar says `text` on the live call, word for word; metered like any reply."""
    _, session = await _load(request)
    text = await read_text(request)
    if session.status == "ended":
        raise ApiError(409, "session_ended", f"the session has ended ({session.end_reason})")
    if session.status == "created":
        raise ApiError(409, "invalid_state", "the avatar session's call has not been offered yet")
    return op_response(await run_op(request, session, "speak", {"text": text}))


@routes.delete("/api/v1/avatar/sessions/{avatar_session_id}")
async def end_avatar_session(request: web.Request) -> web.Response:
    """Ends the avatar session with its call: the user and agent sessions end with it."""
    _, session = await _load(request)
    return op_response(await run_op(request, session, "hangup", {}))


def _describe(record: AvatarSessionRecord, session: SessionRecord) -> dict[str, Any]:
    return {
        "avatar_session_id": str(record.id),
        "session_id": str(session.id),
        "heygen_session_id": record.heygen_session_id,
        "provider": record.provider or "rendered",
        "avatar_id": record.avatar_id,
        "quality": record.quality_setting,
        "voice_id": record.voice_id,
        "status": record.session_status,
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
        "total_streaming_time": record.total_streaming_time,
        "quota_consumed": str(record.quota_consumed) if record.quota_consumed is not None else None,
    }
