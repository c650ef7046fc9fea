"""What the LiveAvatar realtime socket says, as typed events, and the commands we send.

Server events are JSON text frames with a `type` (docs.liveavatar.com, LITE mode events, and the
clients that speak it). Sources disagree on some fields, so both are read:
- the utterance id of agent.speak_started/_ended/_interrupted is documented as `event_id`
  ("matches the triggering agent.speak"); other clients read `source_event_id`: we take
  `source_event_id` when present, else `event_id`;
- session.state_updated states are documented as connecting/connected/closing/closed; others
  report new/connected/disconnected: "closing", "closed" and "disconnected" all mean the end;
- error and warning carry {"error"|"warning": {"type", "message", "event_id"}}, or flat fields.
Every event keeps its frame in `raw`; unknown types come through as `Unknown`, so a new server
event never breaks the reader.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

ENDED_STATES = frozenset({"closing", "closed", "disconnected"})


@dataclass(frozen=True)
class ServerEvent:
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False, kw_only=True)

    @property
    def name(self) -> str:
        """The wire `type`, e.g. "agent.speak_ended"."""
        return str(self.raw.get("type") or "")


@dataclass(frozen=True)
class StateUpdated(ServerEvent):
    """session.state_updated: "connected" means commands are now heard (before, they are dropped)."""

    state: str


@dataclass(frozen=True)
class SpeakStarted(ServerEvent):
    event_id: str | None


@dataclass(frozen=True)
class SpeakEnded(ServerEvent):
    event_id: str | None


@dataclass(frozen=True)
class SpeakInterrupted(ServerEvent):
    event_id: str | None


@dataclass(frozen=True)
class AgentStateUpdated(ServerEvent):
    """agent.state_updated: idle, listening or talking."""

    previous_state: str | None
    new_state: str | None


@dataclass(frozen=True)
class BufferAck(ServerEvent):
    """agent.audio_buffer_appended / _committed / _cleared: `kind` is the last word."""

    kind: str
    source_event_id: str | None


@dataclass(frozen=True)
class ServiceError(ServerEvent):
    type: str
    message: str
    event_id: str | None


@dataclass(frozen=True)
class ServiceWarning(ServerEvent):
    type: str
    message: str


@dataclass(frozen=True)
class Unknown(ServerEvent):
    type: str


@dataclass(frozen=True)
class SocketClosed:
    """The realtime socket ended. `expected`: we closed it (aclose), not the service or the network."""

    expected: bool
    code: int | None
    reason: str


RealtimeEvent = (
    StateUpdated | SpeakStarted | SpeakEnded | SpeakInterrupted | AgentStateUpdated | BufferAck
    | ServiceError | ServiceWarning | Unknown | SocketClosed
)


def parse_event(raw: str) -> RealtimeEvent:
    """One server frame as an event; a frame that is not a JSON object is Unknown("invalid_json")."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Unknown("invalid_json", raw={"type": "invalid_json", "text": raw[:200]})
    kind = str(data.get("type") or "")
    utterance = _str(data.get("source_event_id")) or _str(data.get("event_id"))
    if kind == "session.state_updated":
        return StateUpdated(str(data.get("state") or ""), raw=data)
    if kind == "agent.speak_started":
        return SpeakStarted(utterance, raw=data)
    if kind == "agent.speak_ended":
        return SpeakEnded(utterance, raw=data)
    if kind == "agent.speak_interrupted":
        return SpeakInterrupted(utterance, raw=data)
    if kind == "agent.state_updated":
        return AgentStateUpdated(_str(data.get("previous_state")), _str(data.get("new_state")), raw=data)
    if kind.startswith("agent.audio_buffer_"):
        return BufferAck(kind.removeprefix("agent.audio_buffer_"), _str(data.get("source_event_id")), raw=data)
    if kind in ("error", "warning"):
        detail = data.get(kind) if isinstance(data.get(kind), dict) else data
        name = str(detail.get("type") or detail.get("code") or kind)
        message = str(detail.get("message") or "")[:300]
        if kind == "warning":
            return ServiceWarning(name, message, raw=data)
        event_id = _str(detail.get("event_id")) or _str(data.get("source_event_id"))
        return ServiceError(name, message, event_id, raw=data)
    return Unknown(kind, raw=data)


def command(kind: str, event_id: str | None = None, **fields: Any) -> str:
    """A client command frame; every command gets an event_id (the service echoes it back)."""
    return json.dumps({"type": kind, "event_id": event_id or new_event_id(), **fields}, separators=(",", ":"))


def new_event_id() -> str:
    return str(uuid.uuid4())


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
