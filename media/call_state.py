"""The states of a call and the only ways between them."""

from __future__ import annotations

from enum import StrEnum


class CallState(StrEnum):
    NEW = "new"  # created for an offer that is being answered
    CONNECTING = "connecting"  # answered; ICE and DTLS under way
    CONNECTED = "connected"  # media flows
    ENDING = "ending"  # tearing down: tasks, pipeline, tracks, peer connection
    ENDED = "ended"  # nothing of the call is left but its record


_ALLOWED: dict[CallState, frozenset[CallState]] = {
    CallState.NEW: frozenset({CallState.CONNECTING, CallState.ENDING}),
    CallState.CONNECTING: frozenset({CallState.CONNECTED, CallState.ENDING}),
    CallState.CONNECTED: frozenset({CallState.ENDING}),
    CallState.ENDING: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A bug: something tried to move a call along a path the lifecycle does not have."""


def checked_transition(current: CallState, target: CallState) -> CallState:
    if target not in _ALLOWED[current]:
        raise IllegalTransition(f"call cannot go from {current} to {target}")
    return target


def is_live(state: CallState) -> bool:
    """Whether the call has media to meter and guard."""
    return state in (CallState.CONNECTING, CallState.CONNECTED)
