"""The Vertex AI Agent Engine agent (AGENT_ENGINE=vertex): an ADK agent deployed on Agent Engine.

Each call gets one agent session (`async_create_session` with the caller's id), every user turn
goes through `async_stream_query` with that user and session, and the text of the streamed events
is yielded as it arrives. The session is deleted when the call ends.

Settings: VERTEX_AGENT_ENGINE (`projects/P/locations/L/reasoningEngines/ID`, required) and
VERTEX_API_ENDPOINT (a base URL; default the engine's regional endpoint). With GOOGLE_API_INSECURE=1
requests carry a dummy token and may go over plain HTTP, for local fakes only; otherwise they carry
Application Default Credentials, loaded once at start on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from agent_bridge.config import EngineConfig
from agent_bridge.google_auth import INSECURE_SETTING, application_default_credentials
from agent_bridge.interfaces import Agent, Conversation, EngineError
from agent_bridge.vertex_events import ReplyReader
from agent_bridge.vertex_rest import AgentEngineError, AgentEngineRest, BearerAuth, Timeouts

log = logging.getLogger(__name__)

ENGINE_SETTING = "VERTEX_AGENT_ENGINE"
ENDPOINT_SETTING = "VERTEX_API_ENDPOINT"
_ENGINE = re.compile(r"projects/([A-Za-z0-9._-]+)/locations/([a-z0-9-]+)/reasoningEngines/([A-Za-z0-9._-]+)")
T = TypeVar("T")


@dataclass(frozen=True)
class VertexSettings:
    engine: str
    endpoint: str
    insecure: bool

    @classmethod
    def from_config(cls, config: EngineConfig) -> VertexSettings:
        """Checked settings; a ValueError names the variable that is missing or wrong."""
        engine = (config.vertex_agent_engine or "").strip().strip("/")
        if not engine:
            raise ValueError(
                f"{ENGINE_SETTING} is required with AGENT_ENGINE=vertex (projects/P/locations/L/reasoningEngines/ID)"
            )
        match = _ENGINE.fullmatch(engine)
        if match is None:
            raise ValueError(f"{ENGINE_SETTING} must be projects/P/locations/L/reasoningEngines/ID, got {engine!r}")
        endpoint = (config.vertex_api_endpoint or default_endpoint(match.group(2))).strip().rstrip("/")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{ENDPOINT_SETTING} must be a base URL such as https://host[:port], got {endpoint!r}")
        if parts.scheme == "http" and not config.google_api_insecure:
            # Real credentials never travel in plaintext.
            raise ValueError(f"{ENDPOINT_SETTING} must be https:// unless {INSECURE_SETTING}=1, got {endpoint!r}")
        return cls(engine=engine, endpoint=endpoint, insecure=config.google_api_insecure)


def default_endpoint(location: str) -> str:
    """The service's endpoint for an engine's location, as the Vertex SDK picks it."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    if location in ("us", "eu"):  # multi-region endpoints
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # in all, the first included
    first_delay: float = 0.3  # seconds, doubled each time, with jitter
    max_delay: float = 2.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.first_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


async def _retrying(policy: RetryPolicy, what: str, call: Callable[[], Awaitable[T]]) -> T:
    """`call`, sent again after a retryable failure; the last failure is raised as it is."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return await call()
        except AgentEngineError as exc:
            if not exc.retryable or attempt == policy.attempts:
                raise
            log.info("vertex: %s failed (%s); retrying", what, exc)
            await asyncio.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class EngineMethods:
    """The class methods of the deployed agent this engine uses, from the engine's spec."""

    create_session: str
    delete_session: str | None
    streams_partial: bool  # async_stream_query takes run_config: ask for token-level streaming

    @classmethod
    def from_resource(cls, engine: str, resource: dict[str, Any]) -> EngineMethods:
        spec = resource.get("spec") if isinstance(resource.get("spec"), dict) else {}
        listed = spec.get("classMethods") or spec.get("class_methods") or []
        methods = {m["name"]: m for m in listed if isinstance(m, dict) and isinstance(m.get("name"), str)}
        stream = methods.get("async_stream_query")
        if stream is None or stream.get("api_mode") != "async_stream":
            raise ValueError(f"{ENGINE_SETTING}: {engine} has no async_stream_query method (deploy an ADK app)")
        create = _first(methods, "async_create_session", "create_session")
        if create is None:
            raise ValueError(f"{ENGINE_SETTING}: {engine} has no create_session method (deploy an ADK app)")
        parameters = stream.get("parameters") if isinstance(stream.get("parameters"), dict) else {}
        properties = parameters.get("properties") if isinstance(parameters.get("properties"), dict) else {}
        return cls(create, _first(methods, "async_delete_session", "delete_session"), "run_config" in properties)


def _first(methods: dict[str, dict[str, Any]], *names: str) -> str | None:
    return next((name for name in names if name in methods), None)


def _shared(work: Awaitable[T]) -> asyncio.Task[T]:
    """A task several callers await through asyncio.shield; its failure is theirs, never "unretrieved"."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


def _failed(task: asyncio.Task[Any]) -> bool:
    """Done without a result: the next caller starts the work again."""
    return task.done() and (task.cancelled() or task.exception() is not None)


class VertexAgent(Agent):
    """The process-wide engine: credentials, the engine's methods and one HTTP client for every call."""

    name = "vertex"

    def __init__(
        self, settings: VertexSettings, *, timeouts: Timeouts | None = None, retry: RetryPolicy | None = None
    ) -> None:
        self.settings = settings
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.methods: EngineMethods | None = None
        self._rest: AgentEngineRest | None = None
        self._ready: asyncio.Task[AgentEngineRest] | None = None

    @classmethod
    def from_config(cls, config: EngineConfig) -> VertexAgent:
        return cls(VertexSettings.from_config(config))

    async def warm_up(self) -> None:
        """Load the credentials and look the engine up, once; a ValueError names the setting to fix."""
        await self.ready()

    async def ready(self) -> AgentEngineRest:
        if self._ready is None or _failed(self._ready):
            self._ready = _shared(self._prepare())
        return await asyncio.shield(self._ready)  # shared: one caller giving up does not cancel it for all

    async def _prepare(self) -> AgentEngineRest:
        s = self.settings
        if s.insecure:
            from google.oauth2.credentials import Credentials

            log.warning(
                "%s=1: the vertex agent talks to %s with a dummy token; for local fakes only",
                INSECURE_SETTING, s.endpoint,
            )
            credentials = Credentials(token="insecure-local-token")  # static: nothing to refresh
        else:
            credentials = (await application_default_credentials()).credentials
        rest = AgentEngineRest(s.endpoint, s.engine, BearerAuth(credentials), self.timeouts)
        try:
            resource = await _retrying(self.retry, "engine lookup", rest.get_engine)
            self.methods = EngineMethods.from_resource(s.engine, resource)
            self._rest = rest
        except AgentEngineError as exc:
            if exc.status is None:  # no HTTP answer at all: the endpoint is the suspect
                raise ValueError(f"{ENDPOINT_SETTING}: cannot look up {s.engine} at {s.endpoint}: {exc}") from None
            raise ValueError(f"{ENGINE_SETTING}: looking up {s.engine} at {s.endpoint} failed: {exc}") from None
        finally:
            if self._rest is not rest:
                await rest.aclose()
        log.info("vertex agent: engine %s at %s", s.engine, s.endpoint)
        return rest

    @property
    def client(self) -> AgentEngineRest | None:
        """The REST client, once the engine was looked up."""
        return self._rest

    def open_conversation(self, session_id: str, user_id: str) -> VertexConversation:
        return VertexConversation(self, session_id, user_id)

    async def aclose(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
            with contextlib.suppress(BaseException):
                await self._ready
        if self._rest is not None:
            await self._rest.aclose()


class VertexConversation(Conversation):
    """One call's agent session. `start()` creates it (or the first reply does); `aclose()` deletes it."""

    def __init__(self, agent: VertexAgent, session_id: str, user_id: str) -> None:
        self.session_id = session_id  # the call's user session
        self.user_id = user_id
        self.agent_session_id: str | None = None  # the agent's session, known once started
        self.tokens = 0
        self._agent = agent
        self._starting: asyncio.Task[str] | None = None
        self._closed = False

    def resume(self, agent_session_id: str) -> None:
        if self.agent_session_id is None and self._starting is None:
            self.agent_session_id = agent_session_id

    async def start(self) -> str:
        """Create the agent session (once; calls made meanwhile share it) and return its id."""
        if self._closed:
            raise EngineError("vertex", "the conversation is closed")
        if self.agent_session_id is not None:
            return self.agent_session_id
        if self._starting is None or _failed(self._starting):
            self._starting = _shared(self._create_session())
        # Shielded: a reply cancelled by a barge-in must not abandon a session half made.
        return await asyncio.shield(self._starting)

    async def _create_session(self) -> str:
        try:
            rest = await self._agent.ready()
        except ValueError as exc:
            raise EngineError("vertex", str(exc)) from None
        methods = self._agent.methods
        assert methods is not None
        call = functools.partial(rest.query, methods.create_session, {"user_id": self.user_id})
        try:
            output = await _retrying(self._agent.retry, "session creation", call)
        except AgentEngineError as exc:
            raise EngineError("vertex", f"creating the agent session failed: {exc}") from None
        session_id = output.get("id") if isinstance(output, dict) else None
        if not isinstance(session_id, str) or not session_id:
            raise EngineError("vertex", "creating the agent session returned no session id")
        self.agent_session_id = session_id
        return session_id

    async def reply(self, text: str) -> AsyncIterator[str]:
        """Stream the agent's answer. Closing this generator (or cancelling its task) ends the HTTP stream."""
        session_id = await self.start()
        rest, methods = self._agent.client, self._agent.methods
        assert rest is not None and methods is not None
        arguments: dict[str, Any] = {"message": text, "user_id": self.user_id, "session_id": session_id}
        if methods.streams_partial:
            arguments["run_config"] = {"streaming_mode": "sse"}  # text as the model writes it, not per response
        policy = self._agent.retry
        for attempt in range(1, policy.attempts + 1):
            reader = ReplyReader()
            base = self.tokens  # what earlier attempts used stays counted
            said_something = False
            try:
                async with contextlib.aclosing(rest.stream_query("async_stream_query", arguments)) as events:
                    async for event in events:
                        delta = reader.feed(event)
                        self.tokens = max(self.tokens, base + reader.tokens)
                        if delta:
                            said_something = True
                            yield delta
                return
            except AgentEngineError as exc:
                # Sent again only while nothing was said: a retry after that would repeat the answer.
                if said_something or not exc.retryable or attempt == policy.attempts:
                    where = "after part of the answer" if said_something else f"after {attempt} attempt(s)"
                    raise EngineError("vertex", f"the reply failed {where}: {exc}") from None
                log.info("vertex: reply stream failed before any text (%s); retrying", exc)
            await asyncio.sleep(policy.delay(attempt))

    async def aclose(self) -> None:
        """Delete the agent session; if that fails it is left to expire on the service (logged)."""
        if self._closed:
            return
        self._closed = True
        if self._starting is not None and not self._starting.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._starting)  # learn the id of a session still being made, to delete it
        session_id, rest, methods = self.agent_session_id, self._agent.client, self._agent.methods
        if session_id is None or rest is None or methods is None:
            return
        if methods.delete_session is None:
            log.info("vertex: the engine has no delete_session; agent session %s is left to expire", session_id)
            return
        arguments = {"user_id": self.user_id, "session_id": session_id}
        call = functools.partial(rest.query, methods.delete_session, arguments)
        try:
            await _retrying(self._agent.retry, "session deletion", call)
        except AgentEngineError as exc:
            log.warning(
                "vertex: deleting agent session %s of user %s failed (%s); it is left to expire",
                session_id, self.user_id, exc,
            )
