"""The states of a LiveAvatar session and what its start hands out."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EventCallback = Callable[[str, dict[str, Any]], None]
LostCallback = Callable[[str, str], None]


class SessionState(enum.Enum):
    NEW = "new"
    TOKEN = "token"
    STARTED = "started"
    CONNECTED = "connected"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


S = SessionState
MOVES: dict[SessionState, frozenset[SessionState]] = {
    S.NEW: frozenset({S.TOKEN, S.FAILED, S.STOPPED}),  # nothing exists yet: stop is immediate
    S.TOKEN: frozenset({S.STARTED, S.FAILED, S.STOPPING}),
    S.STARTED: frozenset({S.CONNECTED, S.FAILED, S.STOPPING}),
    S.CONNECTED: frozenset({S.STARTED, S.STOPPING}),
    S.FAILED: frozenset({S.STOPPING, S.STOPPED}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.STOPPED: frozenset(),
}


@dataclass(frozen=True)
class RoomAccess:
    """Where the avatar appears: a LiveKit room to join with the client token."""

    session_id: str
    livekit_url: str
    livekit_client_token: str = field(repr=False)
    max_session_duration_s: int | None
