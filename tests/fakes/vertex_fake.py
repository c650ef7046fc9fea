"""A stand-in for Vertex AI Agent Engine over real HTTP, for the vertex agent's tests.

It answers the REST shapes the Vertex SDK sends for an ADK app deployed on Agent Engine:
`GET /v1/{engine}` (with `spec.classMethods`), `POST /v1/{engine}:query` for the session class
methods, and `POST /v1/{engine}:streamQuery?alt=sse` for `async_stream_query`, which streams ADK
events. Answers are deterministic (an echo of the question, cut into several events with a delay
between them, with `usage_metadata`); every request is recorded; faults are injected on demand.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ENGINE = "projects/demo-project/locations/us-central1/reasoningEngines/4242"
PREFIX = "You said: "

# What an AdkApp registers (its register_operations), as the engine GET returns it in spec.classMethods.
ADK_CLASS_METHODS: list[dict[str, Any]] = [
    *({"name": name, "api_mode": ""} for name in ("get_session", "list_sessions", "create_session", "delete_session")),
    *(
        {"name": name, "api_mode": "async"}
        for name in ("async_get_session", "async_list_sessions", "async_create_session", "async_delete_session")
    ),
    {"name": "stream_query", "api_mode": "stream"},
    {
        "name": "async_stream_query",
        "api_mode": "async_stream",
        "parameters": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "user_id": {"type": "string"},
                "session_id": {"type": "string"},
                "run_config": {"type": "object"},
            },
            "required": ["message", "user_id"],
        },
    },
]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class StreamRecord:
    """One `:streamQuery` request and what became of its connection."""

    user_id: str
    session_id: str
    message: str
    streaming_mode: str | None
    started: float
    events_sent: int = 0
    completed: bool = False  # every event was written and the response ended normally
    ended: float | None = None  # when the handler saw the exchange end (finished, dropped or cut by the client)
    billed_tokens: int = 0  # the tokens of the model calls this answer finished, from its usage_metadata
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Faults:
    """Statuses are consumed one per request (an empty list answers normally); `*_always` wins over lists."""

    get_status: list[int] = field(default_factory=list)
    query_status: list[int] = field(default_factory=list)
    stream_status: list[int] = field(default_factory=list)
    stream_status_always: int | None = None
    drop_after_events: list[int] = field(default_factory=list)  # per stream: cut the connection after n events
    headers_delay: float = 0.0  # slowness before a stream's response starts
    split_frames: bool = False  # write each event in two pieces, apart in time (a line across TCP segments)


class VertexFake:
    def __init__(
        self, engine: str = ENGINE, *, chunks: int = 3, event_delay: float = 0.05, framing: str = "sse"
    ) -> None:
        self.engine = engine
        self.chunks = chunks
        self.event_delay = event_delay
        self.framing = framing  # "sse" (data: frames) or "lines" (newline-delimited JSON)
        self.class_methods = copy.deepcopy(ADK_CLASS_METHODS)  # a test may change its own engine's spec
        self.faults = Faults()
        self.requests: list[Recorded] = []
        self.sessions: dict[str, str] = {}  # live session id -> user id
        self.created: list[tuple[str, str]] = []  # (user id, session id)
        self.deleted: list[tuple[str, str]] = []
        self.streams: list[StreamRecord] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: the handler is cancelled the moment a client drops its connection,
        # so a stream records its end when the client closed it, not at its next write.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def answer(message: str) -> str:
        return PREFIX + message

    def requests_to(self, suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(suffix)]

    # -- routing ---------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(Recorded(request.method, request.path, dict(request.query), body, dict(request.headers)))
        match = re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+/reasoningEngines/[^/:]+)(:\w+)?", request.path)
        if match is None:
            return _error(404, "NOT_FOUND", f"no route {request.path}")
        name, verb = match.groups()
        if name != self.engine:
            return _error(404, "NOT_FOUND", f"ReasoningEngine {name} not found")
        if request.method == "GET" and verb is None:
            return self._get_engine()
        if request.method == "POST" and verb == ":query":
            return self._query(body or {})
        if request.method == "POST" and verb == ":streamQuery":
            return await self._stream_query(request, body or {})
        return _error(404, "NOT_FOUND", f"no method {request.method} {request.path}")

    def _get_engine(self) -> web.Response:
        if self.faults.get_status:
            status = self.faults.get_status.pop(0)
            return _error(status, "UNAVAILABLE", "engine lookup failed")
        return web.json_response(
            {
                "name": self.engine,
                "displayName": "echo agent",
                "spec": {"agentFramework": "google-adk", "classMethods": self.class_methods},
                "createTime": "2025-01-01T00:00:00Z",
                "updateTime": "2025-01-01T00:00:00Z",
            }
        )

    def _query(self, body: dict[str, Any]) -> web.Response:
        if self.faults.query_status:
            status = self.faults.query_status.pop(0)
            return _error(status, "UNAVAILABLE", "query failed")
        method, args = body.get("classMethod"), body.get("input") or {}
        user_id = args.get("user_id")
        if not isinstance(user_id, str):
            return _error(400, "INVALID_ARGUMENT", "user_id is required")
        if method in ("async_create_session", "create_session"):
            session_id = args.get("session_id") or uuid.uuid4().hex
            self.sessions[session_id] = user_id
            self.created.append((user_id, session_id))
            return web.json_response({"output": _session(session_id, user_id)})
        if method in ("async_delete_session", "delete_session"):
            session_id = args.get("session_id")
            if self.sessions.get(session_id) != user_id:
                return _error(400, "FAILED_PRECONDITION", f"Session {session_id} not found")
            del self.sessions[session_id]
            self.deleted.append((user_id, session_id))
            return web.json_response({"output": None})
        if method in ("async_get_session", "get_session"):
            session_id = args.get("session_id")
            if self.sessions.get(session_id) != user_id:
                return _error(400, "FAILED_PRECONDITION", f"Session {session_id} not found")
            return web.json_response({"output": _session(session_id, user_id)})
        return _error(400, "INVALID_ARGUMENT", f"unknown class method {method!r}")

    # -- streaming -------------------------------------------------------------------------------

    async def _stream_query(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if self.faults.headers_delay:
            await asyncio.sleep(self.faults.headers_delay)
        faults = self.faults
        status = faults.stream_status_always or (faults.stream_status.pop(0) if faults.stream_status else 0)
        if status:
            return _error(status, "UNAVAILABLE", "The service is currently unavailable.")
        args = body.get("input") or {}
        message, user_id, session_id = args.get("message"), args.get("user_id"), args.get("session_id")
        if body.get("classMethod") != "async_stream_query" or not isinstance(message, str):
            return _error(400, "INVALID_ARGUMENT", "expected async_stream_query with a message")
        if self.sessions.get(session_id) != user_id:
            return _error(400, "FAILED_PRECONDITION", f"Session {session_id} not found")
        mode = (args.get("run_config") or {}).get("streaming_mode")
        record = StreamRecord(user_id, session_id, message, mode, started=time.monotonic())
        self.streams.append(record)
        drop_after = self.faults.drop_after_events.pop(0) if self.faults.drop_after_events else None
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            await response.prepare(request)
            for event in self._events(message, partial=mode == "sse", record=record):
                if drop_after is not None and record.events_sent >= drop_after:
                    request.transport.close()  # type: ignore[union-attr]  # no end of the chunked body
                    return response
                frame = json.dumps(event)
                data = (f"data: {frame}\n\n" if self.framing == "sse" else frame + "\n").encode()
                if self.faults.split_frames:
                    await response.write(data[: len(data) // 2])
                    await asyncio.sleep(0.01)
                    data = data[len(data) // 2 :]
                await response.write(data)
                record.events_sent += 1
                await asyncio.sleep(self.event_delay)
            await response.write_eof()
            record.completed = True
            return response
        except ConnectionResetError:
            return response  # the client went away mid-answer (a barge-in cancels its stream): not completed
        finally:
            record.ended = time.monotonic()
            record.done.set()

    def _events(self, message: str, *, partial: bool, record: StreamRecord) -> list[dict[str, Any]]:
        """The ADK events of one answer: the echo cut into `chunks` pieces.

        Streaming mode "sse": partial events with running usage, then the aggregate final event, as
        ADK does. Otherwise each piece is a whole model response of its own, each with its usage.
        """
        words = self.answer(message).split(" ")
        size = -(-len(words) // self.chunks)
        pieces = [
            " ".join(words[i : i + size]) + (" " if i + size < len(words) else "") for i in range(0, len(words), size)
        ]
        prompt = len(message.split())
        invocation = "e-" + uuid.uuid4().hex[:8]
        events: list[dict[str, Any]] = []
        sent = 0
        for piece in pieces:
            sent += len(piece.split())
            usage = _usage(prompt, sent if partial else len(piece.split()))
            events.append(_event(invocation, piece, usage, partial=partial or None))
            if not partial:
                record.billed_tokens += usage["total_token_count"]
        if partial:
            usage = _usage(prompt, sent)
            events.append(_event(invocation, "".join(pieces), usage, partial=None))
            record.billed_tokens += usage["total_token_count"]
        return events


def _usage(prompt: int, candidates: int) -> dict[str, int]:
    total = prompt + candidates
    return {"prompt_token_count": prompt, "candidates_token_count": candidates, "total_token_count": total}


def _event(invocation: str, text: str, usage: dict[str, int], *, partial: bool | None) -> dict[str, Any]:
    # An ADK Event as AdkApp dumps it (model_dump_json(exclude_none=True)): snake_case, no nulls.
    event: dict[str, Any] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "usage_metadata": usage,
        "invocation_id": invocation,
        "author": "echo_agent",
        "actions": {"state_delta": {}, "artifact_delta": {}, "requested_auth_configs": {}},
        "id": uuid.uuid4().hex[:8],
        "timestamp": time.time(),
    }
    if partial:
        event["partial"] = True
    return event


def _session(session_id: str, user_id: str) -> dict[str, Any]:
    # AdkApp's serialised Session.
    return {
        "id": session_id, "app_name": "4242", "user_id": user_id, "state": {}, "events": [],
        "last_update_time": time.time(),
    }


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message, "status": reason}}, status=status)
