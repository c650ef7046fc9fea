"""How a call tells the outside world what happens: a tiny publish/subscribe bus."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Event = dict[str, Any]
EventSink = Callable[[Event], None]


class EventBus:
    """Synchronous fan-out of JSON-ready events; a failing subscriber never hurts the call."""

    def __init__(self) -> None:
        self._sinks: list[EventSink] = []

    def subscribe(self, sink: EventSink) -> Callable[[], None]:
        self._sinks.append(sink)

        def unsubscribe() -> None:
            if sink in self._sinks:
                self._sinks.remove(sink)

        return unsubscribe

    @property
    def has_subscribers(self) -> bool:
        return bool(self._sinks)

    def publish(self, event_type: str, **data: Any) -> None:
        self.deliver({"type": event_type, "ts": round(time.time(), 3), **data})

    def deliver(self, event: Event) -> None:
        """Fan out an event made elsewhere (relayed from the node that holds the call)."""
        event_type = event.get("type")
        for sink in list(self._sinks):
            try:
                sink(event)
            except Exception:  # a subscriber's bug must not end the call
                log.exception("event subscriber failed on %s", event_type)
