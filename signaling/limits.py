"""Every limit the server enforces, read from the environment; 0 means unlimited for each but DRAIN_TIMEOUT_S."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from media.call_limits import CallLimits


CALLS_PER_CORE = 15


@dataclass(frozen=True)
class Limits:
    max_calls_per_user: int = 3  # open sessions per user: created and not expired, or live
    # Live calls on this node: bench/echo_cpu.py measures about 4.6% of a core per echoed call here
    # (about 21 calls per core when saturated); 15 a core keeps a node near 70%.
    max_calls: int = field(default_factory=lambda: CALLS_PER_CORE * (os.cpu_count() or 1))
    rate_limit_sessions_per_minute: int = 30  # session creations per user
    rate_limit_requests_per_minute: int = 600  # /api/v1 requests per user and per client IP
    max_websockets_per_session: int = 4
    max_ws_message_bytes: int = 4096
    max_ws_messages_per_second: int = 20  # bursts of twice this
    max_message_chars: int = 4000  # a typed chat turn
    max_turn_seconds: float = 30.0  # a user turn is cut (and transcribed) after this much speech
    drain_timeout_s: float = 300.0  # after SIGTERM, how long live calls may go on; unlike the rest, 0 = no wait
    call: CallLimits = field(default_factory=CallLimits)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Limits:
        d = cls()
        c = d.call
        return cls(
            max_calls_per_user=_int(environ, "MAX_CALLS_PER_USER", d.max_calls_per_user),
            max_calls=_int(environ, "MAX_CALLS", d.max_calls),
            rate_limit_sessions_per_minute=_int(environ, "RATE_LIMIT_SESSIONS_PER_MINUTE", d.rate_limit_sessions_per_minute),
            rate_limit_requests_per_minute=_int(environ, "RATE_LIMIT_REQUESTS_PER_MINUTE", d.rate_limit_requests_per_minute),
            max_websockets_per_session=_int(environ, "MAX_WEBSOCKETS_PER_SESSION", d.max_websockets_per_session),
            max_ws_message_bytes=_int(environ, "MAX_WS_MESSAGE_BYTES", d.max_ws_message_bytes),
            max_ws_messages_per_second=_int(environ, "MAX_WS_MESSAGES_PER_SECOND", d.max_ws_messages_per_second),
            max_message_chars=_int(environ, "MAX_MESSAGE_CHARS", d.max_message_chars),
            max_turn_seconds=_seconds(environ, "MAX_TURN_SECONDS", d.max_turn_seconds),
            drain_timeout_s=_seconds(environ, "DRAIN_TIMEOUT_S", d.drain_timeout_s, zero="no wait"),
            call=CallLimits(
                connect_timeout_s=_seconds(environ, "CONNECT_TIMEOUT_S", c.connect_timeout_s),
                media_timeout_s=_seconds(environ, "MEDIA_TIMEOUT_S", c.media_timeout_s),
                max_call_seconds=_seconds(environ, "MAX_CALL_SECONDS", c.max_call_seconds),
                max_candidates=_int(environ, "MAX_CANDIDATES", c.max_candidates),
                max_candidate_chars=_int(environ, "MAX_CANDIDATE_CHARS", c.max_candidate_chars),
            ),
        )


def _raw(environ: Mapping[str, str], key: str) -> str | None:
    value = environ.get(key, "").strip()
    return value or None


def _int(environ: Mapping[str, str], key: str, default: int) -> int:
    raw = _raw(environ, key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{key} must be a whole number >= 0 (0 = unlimited), got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{key} must be a whole number >= 0 (0 = unlimited), got {raw!r}")
    return value


def _seconds(environ: Mapping[str, str], key: str, default: float, *, zero: str = "unlimited") -> float:
    raw = _raw(environ, key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{key} must be a number of seconds >= 0 (0 = {zero}), got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} must be a number of seconds >= 0 (0 = {zero}), got {raw!r}")
    return value
