"""What can be done to a session's call, on the node that holds it.

The routes run these here when this node owns the call, and `signaling.cluster` runs them on the
owning node when another node does: either way the answer is the same status and JSON body.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from media.call import Call, CallStateError
from media.call_usage import usage_summary
from media.ice_candidates import IceCandidateInit, InvalidCandidate
from media.pipeline import TextNotSupported
from media.session_lobby import TooManyCandidates
from signaling import keys
from signaling.errors import ApiError

OpResult = tuple[int, dict[str, Any] | None]


@dataclass(frozen=True)
class SessionRef:
    """The session an operation is for, as the asking node read it from the database."""

    session_id: uuid.UUID
    user_id: str
    expires_at: datetime

    def to_json(self) -> dict[str, str]:
        return {"session_id": str(self.session_id), "user_id": self.user_id, "expires_at": self.expires_at.isoformat()}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SessionRef:
        return cls(uuid.UUID(raw["session_id"]), str(raw["user_id"]), datetime.fromisoformat(raw["expires_at"]))


async def hang_up(app: web.Application, ref: SessionRef, _: dict[str, Any]) -> OpResult:
    """Returns once the call has ended (and its end is recorded)."""
    if not await app[keys.CALLS].hang_up(ref.session_id, "hangup"):
        await app[keys.SESSIONS].end(ref.session_id, "hangup")
    return 200, {"status": "ended"}


async def add_candidate(app: web.Application, ref: SessionRef, args: dict[str, Any]) -> OpResult:
    init = IceCandidateInit(args["candidate"], args.get("sdpMid"), args.get("sdpMLineIndex"))
    try:
        await app[keys.CALLS].add_candidate(ref.session_id, ref.user_id, ref.expires_at, init)
    except InvalidCandidate as exc:
        raise ApiError(400, "invalid_candidate", str(exc)) from exc
    except TooManyCandidates as exc:
        raise ApiError(429, "too_many_candidates", str(exc)) from exc
    except CallStateError as exc:
        raise ApiError(409, "session_ended", str(exc)) from exc
    return 204, None


async def _text_to_call(app: web.Application, ref: SessionRef, say: Callable[[Call, str], Awaitable[str]], text: str) -> tuple[Call, str]:
    """Give `text` to the session's call (`say` picks what the call does with it); its answer, or the 409 why not."""
    call = app[keys.CALLS].get(ref.session_id)
    if call is None:
        raise ApiError(409, "invalid_state", "the call has not been offered yet")
    try:
        return call, await say(call, text)
    except CallStateError as exc:
        raise ApiError(409, "invalid_state", str(exc)) from exc
    except TextNotSupported as exc:
        raise ApiError(409, "text_not_supported", str(exc)) from exc


async def send_message(app: web.Application, ref: SessionRef, args: dict[str, Any]) -> OpResult:
    text = str(args["text"])
    _, reply = await _text_to_call(app, ref, Call.send_text, text)
    return 200, {"text": text, "reply": reply}


async def speak(app: web.Application, ref: SessionRef, args: dict[str, Any]) -> OpResult:
    """The call says the text as it is (the avatar, while it speaks for the call); metered like a reply."""
    call, spoken = await _text_to_call(app, ref, Call.speak, str(args["text"]))
    by_avatar = call.avatar_relay is not None and call.avatar_relay.state == "live"
    return 200, {"text": spoken, "characters": len(spoken), "by": "avatar" if by_avatar else "voice"}


async def chat(app: web.Application, ref: SessionRef, args: dict[str, Any]) -> OpResult:
    """A chat message (POST /api/v1/chat/messages) answered by the live call's conversation, spoken if asked."""
    speak = bool(args.get("speak"))
    call = app[keys.CALLS].get(ref.session_id)
    if call is None:
        raise ApiError(409, "invalid_state", "the call has not been offered yet")
    try:
        turn = await call.chat(str(args["text"]), speak=speak)
    except CallStateError as exc:
        raise ApiError(409, "invalid_state", str(exc)) from exc
    except TextNotSupported as exc:
        raise ApiError(409, "text_not_supported", str(exc)) from exc
    by_avatar = call.avatar_relay is not None and call.avatar_relay.state == "live"
    agent = turn.agent_message
    return 200, {
        "message_id": str(agent.message_id) if agent else None,
        "user_message_id": str(turn.user_message.message_id),
        "content": turn.reply,
        "session_id": str(ref.session_id),
        "spoken": turn.spoken,
        "spoken_by": ("avatar" if by_avatar else "voice") if turn.spoken else None,
        "created_at": (agent or turn.user_message).created_at.isoformat(),
    }


async def call_state(app: web.Application, ref: SessionRef, _: dict[str, Any]) -> OpResult:
    call = app[keys.CALLS].get(ref.session_id)
    ended = app[keys.CALLS].end_reason(ref.session_id)
    state = str(call.state) if call is not None else ("ended" if ended is not None else None)
    return 200, {"call_state": state}


async def usage(app: web.Application, ref: SessionRef, _: dict[str, Any]) -> OpResult:
    """The live call's meters, or None when no call is live here (the caller reads the stored ones)."""
    call = app[keys.CALLS].get(ref.session_id)
    if call is None or call.state == "new":
        return 200, None
    return 200, usage_summary(call.usage_snapshot())


Op = Callable[[web.Application, SessionRef, dict[str, Any]], Awaitable[OpResult]]

OPS: dict[str, Op] = {
    "chat": chat,
    "hangup": hang_up,
    "ice": add_candidate,
    "message": send_message,
    "speak": speak,
    "state": call_state,
    "usage": usage,
}


async def run_local(app: web.Application, op: str, ref: SessionRef, args: dict[str, Any]) -> OpResult:
    """Run an operation here; an ApiError becomes its status and error body, as on the wire."""
    try:
        return await OPS[op](app, ref, args)
    except ApiError as exc:
        return exc.status, {"error": {"code": exc.code, "message": exc.message}}
