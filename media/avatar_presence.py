"""What the avatar is doing (speaking, listening, idle), from the call's events, and each stretch recorded.

Durations come from the avatar video's own media clock, so they add up to the streamed video exactly.
"""

from __future__ import annotations

from media.avatar_event_log import AvatarEventLog
from media.avatar_track import AvatarVideoTrack
from media.events import Event, EventBus


class AvatarPresence:
    def __init__(self, track: AvatarVideoTrack, events: EventBus, log: AvatarEventLog) -> None:
        self._track = track
        self._log = log
        self._bot_speaking = False
        self._user_speaking = False
        self._stretch_start_us = 0
        self._ended = False
        self._unsubscribe = events.subscribe(self._on_event)
        log.record("started", 0, {"state": track.state})

    def _on_event(self, event: Event) -> None:
        if event["type"] == "bot_speaking":
            self._bot_speaking = bool(event["speaking"])
        elif event["type"] == "user_speaking":
            self._user_speaking = bool(event["speaking"])
        else:
            return
        state = "speaking" if self._bot_speaking else "listening" if self._user_speaking else "idle"
        if state != self._track.state and not self._ended:
            self._close_stretch()
            self._track.state = state

    def _close_stretch(self) -> None:
        now_us = self._track.meter.media_us
        if now_us > self._stretch_start_us:
            self._log.record(self._track.state, now_us - self._stretch_start_us)
        self._stretch_start_us = now_us

    def end(self) -> None:
        """The call ended: the last stretch, then `ended` with the whole streamed time."""
        if self._ended:
            return
        self._ended = True
        self._unsubscribe()
        # The unsubscribe closure holds our bound `_on_event`: keeping it would tie this object
        # (and the avatar track it holds) into a cycle only the full garbage collector undoes.
        self._unsubscribe = _nothing
        self._close_stretch()
        self._log.record("ended", 0, {"total_us": self._track.meter.media_us})


def _nothing() -> None:
    """An ended presence's unsubscribe."""
