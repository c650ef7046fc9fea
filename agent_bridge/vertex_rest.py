"""A small async REST client for Vertex AI Agent Engine, over aiohttp.

It sends the requests the Vertex SDK's client (`vertexai.Client(...).agent_engines`) sends for a
deployed agent: `GET /v1/{engine}`; `POST /v1/{engine}:query` with `{"classMethod", "input"}` for
the session methods; `POST /v1/{engine}:streamQuery?alt=sse` with the same body for
`async_stream_query`, answered by a stream of JSON events (SSE `data:` frames or plain lines).

Why not the SDK itself: closing the iterator of its `async_stream_query` leaves its HTTP response
open (the inner generators are only finalised by the garbage collector), so a barge-in would let the
agent go on streaming; its engine lookup is synchronous; and after a connection error it sleeps
1-10 s before one blind retry. Here closing a stream closes its connection at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

log = logging.getLogger(__name__)

# Statuses worth sending the same request again for: throttling, and the service failing or busy.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_MAX_BUFFERED = 16 * 1024 * 1024  # one event line; far above any real ADK event


class AgentEngineError(Exception):
    """A request failed. `retryable`: sending it again may work (the service or the network failed)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    response: float = 30.0  # until the response starts: a cold engine instance takes a while
    between_events: float = 60.0  # silence within a stream: tool calls can take long
    query: float = 30.0  # a whole lookup or session call


class BearerAuth:
    """Request headers from google-auth credentials; refreshed on a worker thread, never on the loop."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._lock: asyncio.Lock | None = None

    async def headers(self) -> dict[str, str]:
        from google.auth.credentials import TokenState

        credentials = self._credentials
        if credentials.token_state is not TokenState.FRESH:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:  # one refresh for all the calls that found the token stale
                if credentials.token_state is not TokenState.FRESH:
                    await asyncio.to_thread(_refresh, credentials)
        headers: dict[str, str] = {}
        credentials.apply(headers)  # authorization, and x-goog-user-project when there is a quota project
        return headers


def _refresh(credentials: Credentials) -> None:
    from google.auth.transport.requests import Request

    credentials.refresh(Request())


class AgentEngineRest:
    """One deployed engine's REST calls. Make and use it on one event loop."""

    def __init__(self, base_url: str, engine: str, auth: BearerAuth, timeouts: Timeouts | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.engine = engine
        self.timeouts = timeouts or Timeouts()
        self._auth = auth
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeouts.connect),
                headers={"User-Agent": "voice-avatar-server (agent_bridge.vertex_agent)"},
                raise_for_status=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get_engine(self) -> dict[str, Any]:
        """The engine resource: `name`, `spec.classMethods`, ..."""
        result = await self._call("GET", f"/v1/{self.engine}", None)
        if not isinstance(result, dict):
            raise AgentEngineError("the engine lookup answered something other than a JSON object")
        return result

    async def query(self, class_method: str, arguments: dict[str, Any]) -> Any:
        """Run a class method through `:query` and return its `output`."""
        result = await self._call("POST", f"/v1/{self.engine}:query", {"classMethod": class_method, "input": arguments})
        return result.get("output") if isinstance(result, dict) else None

    async def stream_query(self, class_method: str, arguments: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The events of a `:streamQuery`, each as it arrives.

        Closing this generator, or cancelling the task iterating it, closes the HTTP connection at
        once. Failures raise AgentEngineError; a stream cut short is `retryable`.
        """
        url = f"{self.base_url}/v1/{self.engine}:streamQuery?alt=sse"
        body = {"classMethod": class_method, "input": arguments}
        response = await self._send("POST", url, body, self.timeouts.response)
        finished = False
        try:
            if response.status >= 400:
                raise await _status_error(response)
            buffer = bytearray()  # the line being received
            while True:
                try:
                    async with asyncio.timeout(self.timeouts.between_events):
                        chunk = await response.content.readany()
                except TimeoutError:
                    raise AgentEngineError(
                        f"the stream went silent for {self.timeouts.between_events:g} s", retryable=True
                    ) from None
                except aiohttp.ClientError as exc:
                    raise AgentEngineError(f"the stream was cut: {exc or type(exc).__name__}", retryable=True) from None
                buffer += chunk
                if chunk and b"\n" not in chunk:
                    if len(buffer) > _MAX_BUFFERED:
                        raise AgentEngineError("an event of the stream is too large")
                    continue
                lines = bytes(buffer).split(b"\n")
                buffer = bytearray(lines.pop() if chunk else b"")  # at the end, the last line needs no newline
                for line in lines:
                    event = _parse_line(line)
                    if event is not None:
                        yield event
                if not chunk:
                    finished = True
                    return
        finally:
            # A stream left early is closed, not released: its connection cannot carry another request.
            if finished:
                response.release()
            else:
                response.close()

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        try:
            async with asyncio.timeout(self.timeouts.query):
                response = await self._send(method, self.base_url + path, body, None)
                async with response:
                    if response.status >= 400:
                        raise await _status_error(response)
                    return await response.json(content_type=None)
        except TimeoutError:
            raise AgentEngineError(f"no answer within {self.timeouts.query:g} s", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise AgentEngineError(f"the request failed: {exc or type(exc).__name__}", retryable=True) from None
        except ValueError:
            raise AgentEngineError("the service answered something other than JSON") from None

    async def _send(
        self, method: str, url: str, body: dict[str, Any] | None, timeout: float | None
    ) -> aiohttp.ClientResponse:
        """Send a request and return once its response starts."""
        headers = await self._auth.headers()
        headers["Content-Type"] = "application/json"  # on every request, bodiless ones too, as the SDK sends it
        data = None if body is None else json.dumps(body).encode()  # json.dumps as the SDK does: the same bytes
        try:
            async with asyncio.timeout(timeout):
                return await self._client().request(method, url, data=data, headers=headers)
        except TimeoutError:
            raise AgentEngineError(f"no response within {timeout:g} s", retryable=True) from None
        except aiohttp.ClientError as exc:
            reason = exc or type(exc).__name__
            raise AgentEngineError(f"cannot reach {self.base_url}: {reason}", retryable=True) from None


async def _status_error(response: aiohttp.ClientResponse) -> AgentEngineError:
    """The service's own message of a failed request (Google's `{"error": {"message"}}`), with its status."""
    message = response.reason or "error"
    try:
        payload = await response.json(content_type=None)
        message = payload["error"]["message"] or message
    except (aiohttp.ClientError, ValueError, LookupError, TypeError):
        pass  # not Google's error shape: the status line says enough
    retryable = response.status in RETRYABLE_STATUS
    return AgentEngineError(f"HTTP {response.status}: {message}", status=response.status, retryable=retryable)


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    """One event from a line of the stream: a JSON object, bare or in an SSE `data:` frame."""
    line = raw.decode("utf-8", errors="replace").strip()
    if line.startswith("data:"):
        line = line[5:].strip()
    elif line.startswith((":", "event:", "id:", "retry:")):
        return None  # SSE fields that carry no event
    if not line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        log.warning("vertex: skipping a stream line that is not JSON: %.200s", line)
        return None
    if not isinstance(event, dict):
        return None
    error = event.get("error")
    if isinstance(error, dict):  # the service reports a failure inside the stream this way
        status = error.get("code") if isinstance(error.get("code"), int) else None
        raise AgentEngineError(
            f"the stream reported an error: {error.get('message') or error}",
            status=status,
            retryable=status in RETRYABLE_STATUS,
        )
    return event
