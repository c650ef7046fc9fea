"""GET /api/v1/sessions/{id}/events: the call's events as JSON over a WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from aiohttp import WSMsgType, web

from media.calls import CallRegistry
from media.events import Event
from signaling import keys
from signaling.sessions_api import load_session, routes

log = logging.getLogger(__name__)

# A browser that stops reading loses its oldest events, not the server's memory.
_MAX_BACKLOG = 256


@routes.get("/api/v1/sessions/{session_id}/events")
async def session_events(request: web.Request) -> web.StreamResponse:
    principal, record = await load_session(request)  # errors here are plain JSON, before the upgrade
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)

    if record.status == "ended":
        await ws.send_json({"type": "state", "state": "ended", "reason": record.end_reason})
        await ws.close()
        return ws

    registry: CallRegistry = request.app[keys.CALLS]
    call = registry.get_or_create(record.id, principal.user_id)
    backlog: asyncio.Queue[Event] = asyncio.Queue(maxsize=_MAX_BACKLOG)

    def deliver(event: Event) -> None:
        if backlog.full():
            backlog.get_nowait()
        backlog.put_nowait(event)

    unsubscribe = call.events.subscribe(deliver)
    request.app[keys.WEBSOCKETS].add(ws)
    deliver({"type": "state", "ts": round(time.time(), 3), "state": call.state})
    writer = asyncio.ensure_future(_write_events(ws, backlog))
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await _on_client_message(ws, message.data)
            elif message.type == WSMsgType.ERROR:
                break
            if writer.done():
                break
    finally:
        unsubscribe()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        request.app[keys.WEBSOCKETS].discard(ws)
    return ws


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
