"""The failures of the LiveAvatar client, all `EngineError`s of engine "liveavatar".

Each carries the HTTP status and the service's own code (its envelope's `code`, e.g. 4003) when
there was an answer, so a caller tells a rejected key (fix the config, do not retry) from a
failing service (try again later) without parsing messages.
"""

from __future__ import annotations

from agent_bridge.interfaces import EngineError

ENGINE = "liveavatar"


class LiveAvatarError(EngineError):
    """A LiveAvatar call failed. `retryable`: the same call may work later."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(ENGINE, message)
        self.status = status
        self.code = code


class LiveAvatarAuthError(LiveAvatarError):
    """401/403: the API key or the session token was refused."""


class LiveAvatarRequestError(LiveAvatarError):
    """Another 4xx: the request itself is wrong (unknown avatar, bad body, session gone...)."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message, status=status, code=code)
        self.retryable = status in (408, 409, 429)  # busy or throttled: later may work


class LiveAvatarServiceError(LiveAvatarError):
    """5xx, no answer in time, or the network failed (then `status` is None)."""

    retryable = True


class LiveAvatarProtocolError(LiveAvatarError):
    """The service answered something this client cannot read (missing fields, not JSON)."""


class LiveAvatarStateError(LiveAvatarError):
    """A call that the session's or socket's current state does not allow."""


def error_for_status(status: int, message: str, code: int | None, *, op: str = "") -> LiveAvatarError:
    """The error class a failed HTTP answer maps to; `op` names the call in the message."""
    code_text = f" (code {code})" if code is not None else ""
    text = (f"{op}: " if op else "") + f"HTTP {status}{code_text}: {message}"
    if status in (401, 403):
        return LiveAvatarAuthError(text, status=status, code=code)
    if status >= 500:
        return LiveAvatarServiceError(text, status=status, code=code)
    return LiveAvatarRequestError(text, status=status, code=code)
