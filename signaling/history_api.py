"""Conversation history: a session's messages, the caller's sessions, and chat with a session's agent.

GET on the collection /api/v1/sessions lives beside POST (sessions_api): aiohttp tries every
resource of a path before it answers 405, so the two never shadow each other.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from datetime import UTC, datetime

from aiohttp import web

from media.text_chat import reply_without_call
from signaling import keys, page_cursor
from signaling.auth import principal_of
from signaling.cluster import MESSAGE_TIMEOUT_S
from signaling.errors import ApiError, message_text, read_json
from signaling.sessions_api import load_session, op_response, require_quota, run_op
from storage.messages import MessageRepository, NewMessage
from storage.session_history import SessionHistoryRepository
from storage.sessions import SessionRecord
from storage.usage import USAGE_TYPES, MeterReading, presented

routes = web.RouteTableDef()

# Agent tokens of chats answered without a call: one running total per session, billed as agent_tokens.
CHAT_TOKENS_METER = "chat_agent_tokens"
# One chat's meter update at a time per session on this node (the total is read, then raised).
_meter_locks: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = weakref.WeakValueDictionary()


def _limit(request: web.Request, default: int, maximum: int = 100) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise ApiError(400, "invalid_limit", f"`limit` must be a whole number from 1 to {maximum}")
    return int(raw)


def _cursor_secret(request: web.Request) -> str:
    return request.app[keys.SETTINGS].resolve_jwt_secret()


@routes.get("/api/v1/sessions/{session_id}/messages")
async def session_messages(request: web.Request) -> web.Response:
    """The session's messages, oldest first, a page at a time."""
    _, record = await load_session(request)
    limit = _limit(request, 50)
    scope = f"messages:{record.id}"
    after: int | None = None
    cursor = request.query.get("cursor")
    if cursor is not None:
        position = page_cursor.read(_cursor_secret(request), scope, cursor)
        if not position.isdigit():
            raise ApiError(400, "invalid_cursor", "the cursor is not one this listing issued")
        after = int(position)
    page = await MessageRepository(request.app[keys.DB].pool).page(record.id, after=after, limit=limit)
    next_cursor = None
    if page.next_after is not None:
        next_cursor = page_cursor.issue(_cursor_secret(request), scope, str(page.next_after))
    return web.json_response(
        {"session_id": str(record.id), "messages": [m.to_json() for m in page.messages], "next_cursor": next_cursor}
    )


@routes.get("/api/v1/sessions")
async def my_sessions(request: web.Request) -> web.Response:
    """The caller's sessions, newest first, with what each used and how many messages it has."""
    principal = principal_of(request)
    limit = _limit(request, 20)
    scope = f"sessions:{principal.user_id}"
    before: tuple[datetime, uuid.UUID] | None = None
    cursor = request.query.get("cursor")
    if cursor is not None:
        position = page_cursor.read(_cursor_secret(request), scope, cursor)
        try:
            created_at, session_id = position.split("|")
            before = (datetime.fromisoformat(created_at), uuid.UUID(session_id))
        except ValueError as exc:
            raise ApiError(400, "invalid_cursor", "the cursor is not one this listing issued") from exc
    page = await SessionHistoryRepository(request.app[keys.DB].pool).page(principal.user_id, before=before, limit=limit)
    next_cursor = None
    if page.next_before is not None:
        created_at, session_id = page.next_before
        next_cursor = page_cursor.issue(_cursor_secret(request), scope, f"{created_at.isoformat()}|{session_id}")
    sessions = []
    for summary in page.sessions:
        body = summary.record.to_json()
        body["usage"] = {t: presented(t, summary.usage.get(t, 0)) for t in USAGE_TYPES}
        body["message_count"] = summary.message_count
        sessions.append(body)
    return web.json_response({"sessions": sessions, "next_cursor": next_cursor})


@routes.post("/api/v1/chat/messages")
async def chat_message(request: web.Request) -> web.Response:
    """A typed message to the session's agent: answered by its live call if it has one, else directly."""
    principal = principal_of(request)
    body = await read_json(request)
    content, raw_session, speak = body.get("content"), body.get("session_id"), body.get("enable_avatar_speech", False)
    max_chars = request.app[keys.SETTINGS].limits.max_message_chars
    text = message_text(content, "content", "invalid_content", max_chars)
    if not isinstance(speak, bool):
        raise ApiError(400, "invalid_enable_avatar_speech", "`enable_avatar_speech` must be true or false")
    try:
        session_id = uuid.UUID(str(raw_session)) if isinstance(raw_session, str) else None
    except ValueError:
        session_id = None
    if session_id is None:
        raise ApiError(400, "invalid_session", "`session_id` must be a session id (a UUID)")
    record = await request.app[keys.SESSIONS].get_for_user(session_id, principal.user_id)
    if record is None:
        raise ApiError(404, "session_not_found", "no such session")
    await require_quota(request, principal.user_id, ["agent_tokens", "tts_characters"] if speak else ["agent_tokens"])
    if record.status in ("connecting", "connected"):
        result = await run_op(request, record, "chat", {"text": text, "speak": speak}, timeout=MESSAGE_TIMEOUT_S)
        status, answer = result
        if not (status == 409 and (answer or {}).get("error", {}).get("code") == "invalid_state"):
            return op_response(result)
        # The call is no longer live (it ended meanwhile): the agent answers without it.
    return web.json_response(await _chat_without_call(request, record, text))


async def _chat_without_call(request: web.Request, record: SessionRecord, text: str) -> dict[str, object]:
    agent = request.app[keys.AGENT_SESSIONS].agent
    if agent is None:
        raise ApiError(409, "text_not_supported", "this server has no agent to answer text")
    messages = MessageRepository(request.app[keys.DB].pool)
    user = NewMessage(uuid.uuid4(), record.id, "user", "text", text, datetime.now(UTC))
    await messages.write(user)
    try:
        reply = await asyncio.wait_for(
            reply_without_call(agent, request.app[keys.SESSIONS], record.id, record.user_id, text), MESSAGE_TIMEOUT_S
        )
    except TimeoutError as exc:
        raise ApiError(502, "agent_failed", "the agent did not answer in time") from exc
    except Exception as exc:
        raise ApiError(502, "agent_failed", "the agent could not answer") from exc
    await _meter_chat_tokens(request, record, reply.tokens)
    agent_message = NewMessage(
        uuid.uuid4(), record.id, "agent", "text", reply.text, datetime.now(UTC),
        generated_characters=len(reply.text),
    )  # fmt: skip
    await messages.write(agent_message)
    return {
        "message_id": str(agent_message.id),
        "user_message_id": str(user.id),
        "content": reply.text,
        "session_id": str(record.id),
        "spoken": False,
        "spoken_by": None,
        "created_at": agent_message.created_at.isoformat(),
    }


async def _meter_chat_tokens(request: web.Request, record: SessionRecord, tokens: int) -> None:
    """Raise the session's chat token meter by `tokens`; the usage ledger bills the rise as agent_tokens.

    Read-then-raise, serialised per session on this node: two nodes chatting on one session at the
    same instant could bill one of the two messages short, never twice.
    """
    if tokens <= 0:
        return
    usage = request.app[keys.USAGE]
    lock = _meter_locks.setdefault(record.id, asyncio.Lock())
    async with lock:
        meters = await usage.session_meters(record.id)
        before = next((m.amount for m in meters if m.meter == CHAT_TOKENS_METER), 0)
        reading = MeterReading(record.id, record.user_id, CHAT_TOKENS_METER, "count", "none", "agent_tokens", before + tokens)
        await usage.flush([reading])
