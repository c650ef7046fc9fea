"""A stand-in for the LiveAvatar API in LITE mode, over real HTTP and a real WebSocket, for tests.

REST: POST /v1/sessions/token (X-API-KEY), /start (Bearer session token), /stop and /keep-alive
(either), answered in the service's envelope {"code", "data", "message"} (success code 1000; errors
4000 validation, 4001 bad key or token, 4003 "Not authenticated" when no credential at all, 4004
unknown session, 5000 service failure). Realtime: the ws_url that start returns, served by
tests.fakes.liveavatar_realtime ("connecting", then "connected" once the avatar is up; commands
before that are dropped; speak, speak_end, interrupt and keep_alive answered as the service does).
Stop closes the socket (state "closed") and the room. Sessions and utterances are the data classes
of tests.fakes.liveavatar_model, re-exported here.

Every request and command is recorded in `calls` as (kind, details); faults on demand:
fail_next(op, status), hang_next(op), drop_websocket(session_id), send_event(session_id, event).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from typing import Any

from aiohttp import web

from tests.fakes.liveavatar_model import (
    BYTES_PER_SECOND,
    MAX_FRAME,
    FakeSession,
    LiveKitLike,
    RoomLike,
    Utterance,
    error_response,
    ok_response,
)
from tests.fakes.liveavatar_realtime import Realtime, send

__all__ = [
    "BYTES_PER_SECOND",
    "DEFAULT_API_KEY",
    "MAX_FRAME",
    "OPS",
    "STOP_REASONS",
    "FakeLiveAvatar",
    "FakeSession",
    "LiveKitLike",
    "RoomLike",
    "Utterance",
]

DEFAULT_API_KEY = "test-liveavatar-key"
STOP_REASONS = frozenset({
    "UNKNOWN", "USER_DISCONNECTED", "SERVER_ERROR", "IDLE_TIMEOUT", "NO_CREDITS", "USER_CLOSED",
    "AVATAR_DELETED", "MAX_DURATION_REACHED", "ZOMBIE_SESSION_REAP", "AGENT_HANG_UP",
})
_ERROR_CODES = {400: 4000, 401: 4001, 403: 4003, 404: 4004, 409: 4009, 422: 4000, 429: 4029}
OPS = ("token", "start", "stop", "keep_alive")


class FakeLiveAvatar:
    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        livekit: LiveKitLike | None = None,
        api_key: str = DEFAULT_API_KEY,
        video_size: tuple[int, int] = (512, 512),
        fps: int = 25,
        playback_speed: float = 1.0,
        auto_connect: bool = True,
        connect_delay_s: float = 0.0,
        max_session_duration_s: int = 1200,
    ) -> None:
        self.host = host
        self.livekit = livekit
        self.api_key = api_key
        self.video_size = video_size
        self.fps = fps
        self.playback_speed = playback_speed
        self.auto_connect = auto_connect
        self.connect_delay_s = connect_delay_s
        self.max_session_duration_s = max_session_duration_s
        self.bare_token_response = False  # answer /token unwrapped, as the quickstart shows it
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[tuple[str, dict[str, str], Any]] = []  # (path, headers, body)
        self.sessions: dict[str, FakeSession] = {}
        self.api_url = ""
        self._faults: dict[str, list[tuple[str, int]]] = {op: [] for op in OPS}
        self._released = asyncio.Event()  # ends hung requests at close
        self._runner: web.AppRunner | None = None
        self._realtime = Realtime(self)

    # -- running ---------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/sessions/token", self._token)
        app.router.add_post("/v1/sessions/start", self._start)
        app.router.add_post("/v1/sessions/stop", self._stop)
        app.router.add_post("/v1/sessions/keep-alive", self._keep_alive)
        app.router.add_get("/v1/realtime/{session_id}", self._realtime.websocket)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.api_url = f"http://{self.host}:{port}"
        return self.api_url

    async def close(self) -> None:
        self._released.set()
        for session in self.sessions.values():
            await self._realtime.end(session, "closed")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- faults and reading ----------------------------------------------------------------------

    def fail_next(self, op: str, status: int = 500) -> None:
        """The next `op` request ("token", "start", "stop", "keep_alive") answers `status`."""
        self._faults[op].append(("fail", status))

    def hang_next(self, op: str) -> None:
        """The next `op` request never answers (until the client gives up or the fake closes)."""
        self._faults[op].append(("hang", 0))

    async def drop_websocket(self, session_id: str) -> None:
        """Cut the session's realtime socket without a close frame, as a network failure would."""
        session = self.sessions[session_id]
        if session.ws_request is not None and session.ws_request.transport is not None:
            session.ws_request.transport.close()
        session.connected = False

    async def set_connected(self, session_id: str) -> None:
        """Say "connected" now (for auto_connect=False)."""
        await self._realtime.connect(self.sessions[session_id])

    async def send_event(self, session_id: str, event: dict[str, Any]) -> None:
        """Push any server event (an "error", a "warning"...) down the session's realtime socket."""
        ws = self.sessions[session_id].ws
        assert ws is not None, "the session has no realtime socket"
        await send(ws, event)

    def calls_of(self, kind: str) -> list[dict[str, Any]]:
        return [details for name, details in self.calls if name == kind]

    def spoken(self, session_id: str) -> dict[str, bytes]:
        """The audio the avatar heard, by utterance event_id (dropped audio is not in it)."""
        return {eid: bytes(u.audio) for eid, u in self.sessions[session_id].utterances.items()}

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until `count` calls of `kind` were recorded."""
        async with asyncio.timeout(timeout):
            while len(self.calls_of(kind)) < count:
                await asyncio.sleep(0.01)
        return self.calls_of(kind)

    # -- REST --------------------------------------------------------------------------------------

    async def _read(self, request: web.Request, op: str) -> tuple[dict[str, Any], web.Response | None]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        self.requests.append((request.path, dict(request.headers), body))
        if self._faults[op]:
            kind, status = self._faults[op].pop(0)
            self.calls.append((op, {"fault": kind, "status": status}))
            if kind == "hang":
                await self._released.wait()
                return {}, error_response(503, 5000, "The fake was closed")
            code = _ERROR_CODES.get(status, 5000 if status >= 500 else 4000)
            return {}, error_response(status, code, "Injected failure")
        if not isinstance(body, dict):
            return {}, error_response(422, 4000, "Request validation errors. body: not a JSON object")
        return body, None

    async def _token(self, request: web.Request) -> web.Response:
        body, failure = await self._read(request, "token")
        if failure is not None:
            return failure
        if request.headers.get("X-API-KEY") != self.api_key:
            return error_response(401, 4001, "Invalid API key")
        if body.get("mode") not in ("LITE", "FULL"):
            why = "Unable to extract tag using discriminator 'mode'"
            return error_response(422, 4000, f"Request validation errors. body: {why}")
        if body.get("mode") != "LITE" or not isinstance(body.get("avatar_id"), str):
            return error_response(422, 4000, "Request validation errors. body.avatar_id: Field required")
        session = FakeSession(str(uuid.uuid4()), secrets.token_urlsafe(24), body["avatar_id"], body)
        self.sessions[session.session_id] = session
        self.calls.append(("token", body))
        data = {"session_id": session.session_id, "session_token": session.session_token}
        if self.bare_token_response:
            return web.json_response(data)
        return ok_response(data, "Session token created")

    async def _start(self, request: web.Request) -> web.Response:
        _, failure = await self._read(request, "start")
        if failure is not None:
            return failure
        session, refused = self._by_bearer(request)
        if session is None:
            return refused or error_response(401, 4001, "Invalid session token")
        if session.state != "created":
            return error_response(400, 4000, f"Session is {session.state}")
        session.state = "started"
        self.calls.append(("start", {"session_id": session.session_id}))
        sid = session.session_id
        if self.livekit is not None:
            width, height = self.video_size
            session.room = self.livekit.room(sid, width=width, height=height, fps=self.fps)
            livekit_url = self.livekit.url
            client, agent = self.livekit.token(sid, f"client-{sid}"), self.livekit.token(sid, f"agent-{sid}")
        else:
            livekit_url, client, agent = "wss://livekit.fake.invalid", f"client-token-{sid}", f"agent-token-{sid}"
        ws_url = f"{self.api_url.replace('http', 'ws', 1)}/v1/realtime/{sid}?token={session.ws_token}"
        duration = session.request.get("max_session_duration") or self.max_session_duration_s
        data = {
            "session_id": sid, "livekit_url": livekit_url, "livekit_client_token": client,
            "livekit_agent_token": agent, "max_session_duration": duration, "ws_url": ws_url,
        }
        return ok_response(data, "Session started", status=201)

    async def _stop(self, request: web.Request) -> web.Response:
        body, failure = await self._read(request, "stop")
        if failure is not None:
            return failure
        session, refused = self._by_either(request, body)
        if session is None:
            return refused  # type: ignore[return-value]
        reason = body.get("reason", "UNKNOWN")
        if reason not in STOP_REASONS:
            why = f"{reason!r} is not a valid enum value"
            return error_response(422, 4000, f"Request validation errors. body.reason: {why}")
        auth = "bearer" if request.headers.get("Authorization") else "api_key"
        self.calls.append(("stop", {"session_id": session.session_id, "reason": reason, "auth": auth,
                                    "was": session.state}))
        if session.state != "stopped":  # a second stop is answered the same: stopping is idempotent
            session.state, session.stop_reason = "stopped", reason
            await self._realtime.end(session, "closed")
            if session.room is not None:
                await session.room.disconnect_all(reason="session stopped")
        return ok_response(None, "Session stopped")

    async def _keep_alive(self, request: web.Request) -> web.Response:
        body, failure = await self._read(request, "keep_alive")
        if failure is not None:
            return failure
        session, refused = self._by_either(request, body)
        if session is None:
            return refused  # type: ignore[return-value]
        if session.state != "started":
            return error_response(400, 4000, f"Session is {session.state}")
        session.keep_alives += 1
        self.calls.append(("keep_alive", {"session_id": session.session_id, "via": "rest"}))
        return ok_response(None, "Session kept alive")

    def _by_bearer(self, request: web.Request) -> tuple[FakeSession | None, web.Response | None]:
        header = request.headers.get("Authorization", "")
        if not header:
            return None, error_response(403, 4003, "Not authenticated")
        token = header.removeprefix("Bearer ").strip()
        for session in self.sessions.values():
            if secrets.compare_digest(session.session_token, token):
                return session, None
        return None, error_response(401, 4001, "Invalid session token")

    def _by_either(self, request: web.Request, body: dict[str, Any]) -> tuple[FakeSession | None, web.Response | None]:
        """A session token names its session; the API key needs body.session_id."""
        if request.headers.get("Authorization"):
            return self._by_bearer(request)
        if "X-API-KEY" not in request.headers:
            return None, error_response(403, 4003, "Not authenticated")
        if request.headers["X-API-KEY"] != self.api_key:
            return None, error_response(401, 4001, "Invalid API key")
        session = self.sessions.get(str(body.get("session_id") or ""))
        if not body.get("session_id"):
            return None, error_response(400, 4000, "session_id is required with an API key")
        if session is None:
            return None, error_response(404, 4004, "Session not found")
        return session, None
