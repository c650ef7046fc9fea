"""Prometheus instruments fed by what every call already publishes on its event bus.

The registry hands each answered call to `CallMetrics.call_answered`; from then on one subscriber
reads the call's events (state, turn_metrics, error, engine_fallback, quota_exhausted). Nothing is
added to the media path: events are published anyway, a few times a second at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram

from media.events import Event, EventBus

PREFIX = "voice_avatar_"
SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
TURN_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# turn_metrics fields (media/turn_metrics.py) by the stage label they are observed under.
TURN_STAGES = {"stt_ms": "stt", "agent_first_text_ms": "agent_first_text", "tts_first_audio_ms": "tts_first_audio"}
# Error codes that mean an engine failed (media/engine_fallback.py, media/avatar_relay.py), by engine kind.
ENGINE_OF_ERROR = {"stt_failed": "stt", "tts_failed": "tts", "agent_failed": "agent", "avatar_failed": "avatar"}


class ObservedCall(Protocol):
    events: EventBus


class CallMetrics:
    """The per-call instruments of one app's registry."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.answer_seconds = Histogram(
            PREFIX + "call_answer_seconds", "Offer received -> SDP answer ready (ICE gathered)",
            buckets=SETUP_BUCKETS, registry=registry,
        )
        self.setup_seconds = Histogram(
            PREFIX + "call_setup_seconds", "Offer received -> call connected (ICE and DTLS done)",
            buckets=SETUP_BUCKETS, registry=registry,
        )
        self.voice_to_voice_seconds = Histogram(
            PREFIX + "turn_voice_to_voice_seconds", "End of the user's speech -> first frame of the reply sent",
            buckets=TURN_BUCKETS, registry=registry,
        )
        self.turn_stage_seconds = Histogram(
            PREFIX + "turn_stage_seconds", "Per-stage turn latency: stt, agent_first_text, tts_first_audio",
            ["stage"], buckets=TURN_BUCKETS, registry=registry,
        )
        self.call_errors = Counter(PREFIX + "call_errors_total", "Error events of calls, by code", ["code"], registry=registry)
        self.engine_errors = Counter(
            PREFIX + "engine_errors_total", "Engine failures in calls (after the engine's own retries)", ["engine"],
            registry=registry,
        )
        self.engine_fallbacks = Counter(
            PREFIX + "engine_fallbacks_total", "Calls moved to an offline engine", ["kind", "engine"], registry=registry
        )
        self.quota_exhausted = Counter(
            PREFIX + "call_quota_exhausted_total", "Live calls that ran out of a usage type's quota", ["usage_type"],
            registry=registry,
        )
        self.calls_ended = Counter(PREFIX + "calls_ended_total", "Calls ended, by reason", ["reason"], registry=registry)

    def call_answered(self, call: ObservedCall, offered_at: float) -> None:
        """The call's offer (received at `offered_at` on our clock) is answered: follow its events until it ends."""
        self.answer_seconds.observe(max(0.0, self._clock() - offered_at))
        watcher = _CallWatcher(self, offered_at)
        watcher.unsubscribe = call.events.subscribe(watcher.on_event)


class _CallWatcher:
    def __init__(self, metrics: CallMetrics, offered_at: float) -> None:
        self._metrics = metrics
        self._offered_at = offered_at
        self._connected = False
        self.unsubscribe: Callable[[], None] = lambda: None

    def on_event(self, event: Event) -> None:
        kind = event.get("type")
        metrics = self._metrics
        if kind == "state":
            state = event.get("state")
            if state == "connected" and not self._connected:
                self._connected = True
                metrics.setup_seconds.observe(max(0.0, metrics._clock() - self._offered_at))
            elif state == "ended":
                metrics.calls_ended.labels(reason=_label(event.get("reason"))).inc()
                self.unsubscribe()  # the bus goes with the call; nothing of this call is kept
        elif kind == "turn_metrics":
            _observe_ms(metrics.voice_to_voice_seconds, event.get("voice_to_voice_ms"))
            for field, stage in TURN_STAGES.items():
                _observe_ms(metrics.turn_stage_seconds.labels(stage=stage), event.get(field))
        elif kind == "error":
            code = _label(event.get("code"))
            metrics.call_errors.labels(code=code).inc()
            engine = ENGINE_OF_ERROR.get(code)
            if engine is not None:
                metrics.engine_errors.labels(engine=engine).inc()
        elif kind == "engine_fallback":
            metrics.engine_fallbacks.labels(kind=_label(event.get("kind")), engine=_label(event.get("engine"))).inc()
        elif kind == "quota_exhausted":
            metrics.quota_exhausted.labels(usage_type=_label(event.get("usage_type"))).inc()


def _observe_ms(histogram: Histogram, value: object) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        histogram.observe(value / 1000)


def _label(value: object) -> str:
    # Label values come from our own code's fixed strings; anything else is folded to keep cardinality small.
    return value[:64] if isinstance(value, str) and value else "unknown"
