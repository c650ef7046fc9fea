"""The fake LiveAvatar API's realtime WebSocket: GET /v1/realtime/{session_id}?token=..., as start's ws_url.

Like the real service it says session.state_updated "connecting" when the socket opens and
"connected" once the avatar is up, which here means: after `connect_delay_s`, and, with a LiveKit
fake, once someone holding a token that start gave out (client-<id>, agent-<id>) is in the room.
Commands before that are dropped (and recorded as dropped). Then the first audio of an utterance
gets agent.speak_started, speak_end gets agent.speak_ended once the audio would have finished
playing (in real time / playback_speed), interrupt gets agent.audio_buffer_cleared after an
agent.speak_interrupted for each utterance still playing. One socket per session: a new one
replaces the old. Every command is recorded in the owner's `calls`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
import uuid
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from tests.fakes.liveavatar_model import (
    BYTES_PER_SECOND,
    MAX_FRAME,
    FakeSession,
    Utterance,
    error_response,
    speak_event,
    ws_error,
)

# What the commands are recorded as in `calls`; anything else keeps its type.
_CALL_KINDS = {
    "agent.speak": "speak", "agent.speak_end": "speak_end", "agent.interrupt": "interrupt",
    "session.keep_alive": "keep_alive",
}


class RealtimeOwner(Protocol):
    """What is used of FakeLiveAvatar: read on each use, since tests change the settings mid-test."""

    calls: list[tuple[str, dict[str, Any]]]
    sessions: dict[str, FakeSession]
    playback_speed: float
    auto_connect: bool
    connect_delay_s: float


class Realtime:
    """The realtime side of the fake: the socket handler and the avatar's answers to commands."""

    def __init__(self, owner: RealtimeOwner) -> None:
        self.owner = owner

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        session = self.owner.sessions.get(request.match_info["session_id"])
        if session is None or not secrets.compare_digest(request.query.get("token", ""), session.ws_token):
            return error_response(401, 4001, "Invalid session")
        if session.state != "started":
            return error_response(400, 4000, f"Session is {session.state}")
        await self.end(session, "replaced")  # one control socket per session
        ws = web.WebSocketResponse(max_msg_size=4 * MAX_FRAME, timeout=2.0)
        await ws.prepare(request)
        session.ws, session.ws_request, session.connected = ws, request, False
        self.owner.calls.append(("ws_connect", {"session_id": session.session_id}))
        await send(ws, {"type": "session.state_updated", "state": "connecting"})
        if self.owner.auto_connect:
            self._spawn(session, self._auto_connect(session, ws))
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await self._command(session, ws, message.data)
        finally:
            if session.ws is ws:
                session.ws, session.ws_request, session.connected = None, None, False
            self.owner.calls.append(("ws_closed", {"session_id": session.session_id}))
        return ws

    async def connect(self, session: FakeSession) -> None:
        """Say "connected" on the session's socket, if it has one and has not yet."""
        if session.ws is not None and not session.connected:
            session.connected = True
            await send(session.ws, {"type": "session.state_updated", "state": "connected"})

    async def end(self, session: FakeSession, state: str) -> None:
        """Stop the session's pending answers, then close its socket saying `state`."""
        for task in list(session.tasks):
            task.cancel()
        ws = session.ws
        if ws is not None and not ws.closed:
            await send(ws, {"type": "session.state_updated", "state": state})
            await ws.close()
        session.connected = False

    async def _auto_connect(self, session: FakeSession, ws: web.WebSocketResponse) -> None:
        await asyncio.sleep(self.owner.connect_delay_s)
        room = session.room
        # Someone holding a token this service gave out (client-<id> or agent-<id>) must be in the room.
        ours = {f"client-{session.session_id}", f"agent-{session.session_id}"}
        while room is not None and not (ours & set(room.present)) and session.ws is ws:
            try:
                await room.wait_joined(timeout=1)
            except TimeoutError:
                continue
        if session.ws is ws:
            await self.connect(session)

    async def _command(self, session: FakeSession, ws: web.WebSocketResponse, raw: str) -> None:
        if len(raw.encode()) > MAX_FRAME:
            self.owner.calls.append(("oversize", {"session_id": session.session_id, "bytes": len(raw)}))
            await send(ws, ws_error("invalid_request_error", "message larger than 1MB", None))
            return
        try:
            message = json.loads(raw)
            kind, event_id = message["type"], message.get("event_id")
        except (ValueError, TypeError, KeyError):
            await send(ws, ws_error("invalid_request_error", "not a JSON command", None))
            return
        pcm = b""
        if kind == "agent.speak":
            try:
                pcm = base64.b64decode(message.get("audio") or "", validate=True)
            except (binascii.Error, ValueError):
                await send(ws, ws_error("invalid_request_error", "audio is not base64", event_id))
                return
        record = {"session_id": session.session_id, "event_id": event_id, "dropped": not session.connected,
                  "at": time.monotonic()}
        if kind == "agent.speak":
            record["audio"] = pcm
        self.owner.calls.append((_CALL_KINDS.get(kind, kind), record))
        if kind == "session.keep_alive":
            record["via"] = "ws"
        if not session.connected:
            session.dropped.append((kind, event_id, pcm))  # the real service ignores it, silently
            return
        loop = asyncio.get_running_loop()
        if kind == "agent.speak" and event_id:
            utterance = session.utterances.setdefault(event_id, Utterance(event_id))
            if utterance.ended or utterance.interrupted:
                return
            utterance.audio += pcm
            if session.room is not None:
                session.room.push_audio(pcm, 24000)
            seconds = len(pcm) / BYTES_PER_SECOND / self.owner.playback_speed
            session.playhead = max(session.playhead, loop.time()) + seconds
            if not utterance.started:
                utterance.started = True
                await send(ws, speak_event("agent.speak_started", event_id))
                await send(ws, {"type": "agent.state_updated", "previous_state": "idle", "new_state": "talking"})
        elif kind == "agent.speak_end" and event_id in session.utterances:
            utterance = session.utterances[event_id]
            if not utterance.interrupted and not utterance.ended:
                utterance.ended = True
                self._spawn(session, self._finish(ws, utterance, session.playhead))
        elif kind == "agent.interrupt":
            session.playhead = loop.time()
            if session.room is not None:
                session.room.clear_audio()
            for utterance in session.utterances.values():
                if utterance.started and not utterance.finished and not utterance.interrupted:
                    utterance.interrupted = True
                    await send(ws, speak_event("agent.speak_interrupted", utterance.event_id))
            await send(ws, {"type": "agent.audio_buffer_cleared", "event_id": str(uuid.uuid4()),
                            "source_event_id": event_id})
        elif kind == "session.keep_alive":
            session.keep_alives += 1

    async def _finish(self, ws: web.WebSocketResponse, utterance: Utterance, at: float) -> None:
        """Say agent.speak_ended when the utterance's audio has played out (at loop time `at`)."""
        await asyncio.sleep(max(0.0, at - asyncio.get_running_loop().time()))
        if utterance.interrupted or ws.closed:
            return
        utterance.finished = True
        await send(ws, speak_event("agent.speak_ended", utterance.event_id))
        await send(ws, {"type": "agent.state_updated", "previous_state": "talking", "new_state": "idle"})

    def _spawn(self, session: FakeSession, coro: Any) -> None:
        # Kept on the session so that ending its realtime cancels them.
        task = asyncio.ensure_future(coro)
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)


async def send(ws: web.WebSocketResponse, event: dict[str, Any]) -> None:
    if not ws.closed:
        try:
            await ws.send_str(json.dumps(event))
        except (ConnectionError, RuntimeError):
            pass  # the socket went away meanwhile
