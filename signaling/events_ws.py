"""GET /api/v1/sessions/{id}/events: the call's events as JSON over a WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from aiohttp import WSCloseCode, WSMsgType, web

from media.calls import CallRegistry
from media.events import Event
from signaling import keys
from signaling.errors import ApiError
from signaling.sessions_api import load_session, owner_elsewhere, routes, session_ref
from storage.sessions import SessionRecord

log = logging.getLogger(__name__)

# A browser that stops reading loses its oldest events, not the server's memory.
_MAX_BACKLOG = 256


@routes.get("/api/v1/sessions/{session_id}/events")
async def session_events(request: web.Request) -> web.StreamResponse:
    principal, record = await load_session(request)  # errors here are plain JSON, before the upgrade
    limits = request.app[keys.SETTINGS].limits
    open_sockets = request.app[keys.SESSION_SOCKETS]
    key = str(record.id)
    if limits.max_websockets_per_session and open_sockets[key] >= limits.max_websockets_per_session:
        raise ApiError(
            429, "too_many_websockets", f"a session has at most {limits.max_websockets_per_session} event sockets"
        )
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=limits.max_ws_message_bytes)
    open_sockets[key] += 1
    try:
        await ws.prepare(request)
        await _serve(request, ws, principal.user_id, record)
    finally:
        open_sockets[key] -= 1
        if open_sockets[key] <= 0:
            del open_sockets[key]
    return ws


async def _serve(request: web.Request, ws: web.WebSocketResponse, user_id: str, record: SessionRecord) -> None:
    registry: CallRegistry = request.app[keys.CALLS]
    ended_here = registry.end_reason(record.id)
    if record.status == "ended" or ended_here is not None:
        await ws.send_json({"type": "state", "state": "ended", "reason": record.end_reason or ended_here})
        await ws.close()
        return

    backlog: asyncio.Queue[Event] = asyncio.Queue(maxsize=_MAX_BACKLOG)

    def deliver(event: Event) -> None:
        if backlog.full():
            backlog.get_nowait()
        backlog.put_nowait(event)

    owner = owner_elsewhere(request, record)
    if owner is not None:
        # The call is on another node: its events come from there, its current state first.
        unsubscribe = await request.app[keys.CLUSTER].subscribe_remote(owner, session_ref(record), deliver)
    else:
        state, unsubscribe = registry.subscribe(record.id, user_id, record.expires_at, deliver)
        deliver({"type": "state", "ts": round(time.time(), 3), "state": state})
    request.app[keys.WEBSOCKETS].add(ws)
    writer = asyncio.ensure_future(_write_events(ws, backlog))
    # A client may send a few messages a second (pings); a flood closes its socket.
    per_second = request.app[keys.SETTINGS].limits.max_ws_messages_per_second
    allowance = burst = float(2 * per_second)
    last = time.monotonic()
    try:
        async for message in ws:
            now = time.monotonic()
            allowance = min(burst, allowance + (now - last) * per_second) - 1
            last = now
            if per_second and allowance < 0:
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many messages")
                break
            if message.type == WSMsgType.TEXT:
                await _on_client_message(ws, message.data)
            elif message.type in (WSMsgType.ERROR, WSMsgType.BINARY):
                break
            if writer.done():
                break
    finally:
        unsubscribe()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        request.app[keys.WEBSOCKETS].discard(ws)


async def _write_events(ws: web.WebSocketResponse, backlog: asyncio.Queue[Event]) -> None:
    while not ws.closed:
        event = await backlog.get()
        try:
            await ws.send_json(event)
        except (ConnectionResetError, RuntimeError):
            return
        if event.get("type") == "state" and event.get("state") == "ended":
            await ws.close()
            return


async def _on_client_message(ws: web.WebSocketResponse, data: str) -> None:
    try:
        message = json.loads(data)
    except json.JSONDecodeError:
        await ws.send_json({"type": "error", "code": "invalid_json", "message": "messages must be JSON"})
        return
    if isinstance(message, dict) and message.get("type") == "ping":
        await ws.send_json({"type": "pong"})
