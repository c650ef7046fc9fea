"""The LiveAvatar REST calls of one LITE session's life: token, start, keep-alive, stop.

Wire facts (docs.liveavatar.com openapi.json, and the pipecat and livekit-agents clients):
  POST /v1/sessions/token       X-API-KEY; {"mode": "LITE", "avatar_id", ...} -> session_id, session_token
  POST /v1/sessions/start       Authorization: Bearer <session_token> -> livekit_url, livekit_client_token,
                                ws_url, max_session_duration, livekit_agent_token. Billing starts here.
  POST /v1/sessions/keep-alive  {"session_id"}; session token or API key
  POST /v1/sessions/stop        {"session_id", "reason"}; session token or API key (then session_id required)
Answers come in an envelope {"code", "data", "message"}; its success code is documented as 100 and
seen as 1000, so only a code of 4000 or more inside a 2xx answer counts as a failure. The quickstart
also shows the token fields at the top level: both shapes are read. Errors are the same envelope
with a 4xxx/5xxx code (e.g. 403 {"code": 4003, "message": "Not authenticated"}) or FastAPI's
{"detail": [...]} on validation.

Tokens and the key go in headers only; no log line and no error message carries them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from agent_bridge.liveavatar.errors import (
    LiveAvatarAuthError,
    LiveAvatarProtocolError,
    LiveAvatarRequestError,
    LiveAvatarServiceError,
    LiveAvatarStateError,
    error_for_status,
)
from agent_bridge.liveavatar.settings import QUALITIES, LiveAvatarSettings

log = logging.getLogger(__name__)

# SessionEndReasonEnum of the openapi spec.
STOP_REASONS = (
    "UNKNOWN", "USER_DISCONNECTED", "SERVER_ERROR", "IDLE_TIMEOUT", "NO_CREDITS", "USER_CLOSED",
    "AVATAR_DELETED", "MAX_DURATION_REACHED", "ZOMBIE_SESSION_REAP", "AGENT_HANG_UP",
)
_MAX_MESSAGE = 300  # of the service's error text kept in an error


@dataclass(frozen=True)
class SessionToken:
    session_id: str
    session_token: str = field(repr=False)


@dataclass(frozen=True)
class SessionStart:
    """What start returns: the room the avatar joins, and the control socket."""

    session_id: str | None
    livekit_url: str
    livekit_client_token: str = field(repr=False)
    ws_url: str = field(repr=False)  # its query may carry a credential
    max_session_duration_s: int | None = None
    livekit_agent_token: str | None = field(default=None, repr=False)


class LiveAvatarRest:
    """The REST calls over a shared aiohttp ClientSession (owned by the caller)."""

    def __init__(self, settings: LiveAvatarSettings, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self._http = http

    async def create_token(
        self,
        avatar_id: str,
        *,
        quality: str | None = None,
        sandbox: bool | None = None,
        max_session_duration_s: int | None = None,
    ) -> SessionToken:
        """Mint a LITE session token. Nothing is billed until start."""
        if not avatar_id:
            raise ValueError("avatar_id is required")
        quality = quality or self.settings.quality
        if quality is not None and quality not in QUALITIES:
            raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
        body: dict[str, Any] = {"mode": "LITE", "avatar_id": avatar_id}
        if self.settings.sandbox if sandbox is None else sandbox:
            body["is_sandbox"] = True
        if quality is not None:
            body["video_settings"] = {"quality": quality}
        duration = max_session_duration_s or self.settings.max_session_duration_s
        if duration is not None:
            body["max_session_duration"] = int(duration)
        timeout = self.settings.request_timeout_s
        data = await self._call("token", "/v1/sessions/token", body, self._key_headers(), timeout)
        session_id, token = _text(data, "session_id"), _text(data, "session_token")
        if not session_id or not token:
            raise LiveAvatarProtocolError("token: the answer lacks session_id or session_token")
        return SessionToken(session_id, token)

    async def start(self, session_token: str) -> SessionStart:
        """Start the session: the avatar is sent to its room and billing begins."""
        data = await self._call(
            "start", "/v1/sessions/start", None, _bearer(session_token), self.settings.start_timeout_s
        )
        livekit_url, client_token, ws_url = (_text(data, k) for k in ("livekit_url", "livekit_client_token", "ws_url"))
        if not livekit_url or not client_token or not ws_url:
            # Without ws_url there is no way to send audio (a token with livekit_config gives none).
            raise LiveAvatarProtocolError("start: the answer lacks livekit_url, livekit_client_token or ws_url")
        duration = data.get("max_session_duration")
        return SessionStart(
            session_id=_text(data, "session_id"),
            livekit_url=livekit_url,
            livekit_client_token=client_token,
            ws_url=ws_url,
            max_session_duration_s=int(duration) if isinstance(duration, (int, float)) and duration > 0 else None,
            livekit_agent_token=_text(data, "livekit_agent_token"),
        )

    async def keep_alive(self, session_id: str, session_token: str | None) -> None:
        """Reset the service's idle timer (5 minutes for LITE)."""
        await self._session_call("keep-alive", "/v1/sessions/keep-alive", {"session_id": session_id}, session_token)

    async def stop(self, session_id: str, session_token: str | None, reason: str = "USER_CLOSED") -> None:
        """Stop the session. The session token is tried first; if it is refused (expired, e.g.
        for a session a dead node left behind) the API key with the session_id is used. `reason`
        may be ours (e.g. "call_ended"): it is sent as the service's nearest reason."""
        body = {"session_id": session_id, "reason": service_reason(reason)}
        await self._session_call("stop", "/v1/sessions/stop", body, session_token)

    # -- plumbing -------------------------------------------------------------------------------

    def _key_headers(self) -> dict[str, str]:
        return {"X-API-KEY": self.settings.api_key}

    async def _session_call(self, op: str, path: str, body: dict[str, Any], session_token: str | None) -> None:
        timeout = self.settings.request_timeout_s
        if session_token:
            try:
                await self._call(op, path, body, _bearer(session_token), timeout)
                return
            except LiveAvatarAuthError:
                log.info("liveavatar: %s with the session token was refused; trying the API key", op)
        await self._call(op, path, body, self._key_headers(), timeout)

    async def _call(
        self, op: str, path: str, body: dict[str, Any] | None, auth: dict[str, str], timeout: float
    ) -> dict[str, Any]:
        """One request; returns the envelope's `data` (or the bare object), raises LiveAvatarError."""
        headers = {"Accept": "application/json", **auth}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        url = self.settings.api_url + path
        if self._http.closed:
            raise LiveAvatarStateError(f"{op}: the HTTP client is closed")
        try:
            async with asyncio.timeout(timeout):
                async with self._http.post(url, data=data, headers=headers, allow_redirects=False) as response:
                    raw = await response.read()
                    status = response.status
                    reason = response.reason or ""
        except TimeoutError:
            raise LiveAvatarServiceError(f"{op}: no answer within {timeout:g} s") from None
        except aiohttp.ClientError as exc:
            why = exc or type(exc).__name__
            raise LiveAvatarServiceError(f"{op}: cannot reach {self.settings.api_url}: {why}") from None
        log.debug("liveavatar: POST %s -> %d", path, status)
        payload = _json(raw)
        code = payload.get("code") if isinstance(payload, dict) and isinstance(payload.get("code"), int) else None
        if status >= 300:  # redirects are not followed: the key must not travel to another host
            raise error_for_status(status, _message(payload, reason), code, op=op)
        if not isinstance(payload, dict):
            raise LiveAvatarProtocolError(f"{op}: HTTP {status} with a body that is not a JSON object")
        if code is not None and code >= 4000:  # a failure reported inside a 2xx envelope
            cls = LiveAvatarServiceError if code >= 5000 else LiveAvatarRequestError
            raise cls(f"{op}: code {code}: {_message(payload, reason)}", status=status, code=code)
        if "data" in payload and ("code" in payload or "message" in payload):
            inner = payload["data"]
            return inner if isinstance(inner, dict) else {}
        return payload


def service_reason(reason: str) -> str:
    """Why a session ends, as one of the service's STOP_REASONS (which reject anything else)."""
    if reason.strip().upper() in STOP_REASONS:
        return reason.strip().upper()
    words = reason.lower()
    if "duration" in words:
        return "MAX_DURATION_REACHED"
    if "idle" in words:
        return "IDLE_TIMEOUT"
    if any(w in words for w in ("orphan", "zombie", "node")):
        return "ZOMBIE_SESSION_REAP"
    if any(w in words for w in ("fail", "error", "lost", "no_video", "not_stored")):
        return "SERVER_ERROR"
    if "disconnect" in words:
        return "USER_DISCONNECTED"
    return "USER_CLOSED"  # the call ended, the user left: the usual end


def _bearer(session_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {session_token}"}


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _message(payload: Any, fallback: str) -> str:
    """The service's words: the envelope's `message`, or FastAPI's `detail`."""
    text = ""
    if isinstance(payload, dict):
        message, detail = payload.get("message"), payload.get("detail")
        if isinstance(message, str):
            text = message
        elif isinstance(detail, str):
            text = detail
        elif isinstance(detail, list) and detail and isinstance(detail[0], dict):
            text = "; ".join(str(item.get("msg", "")) for item in detail[:3])
    return (text or fallback or "error")[:_MAX_MESSAGE]


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None

