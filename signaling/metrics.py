"""GET /metrics: Prometheus text, from one registry per app (tests run several apps in one process).

What is counted where:
- calls (set-up time, turn latency, engine errors, fallbacks, in-call quota) by media/call_metrics.py,
  from each answered call's own events;
- sessions created and refused (by reason) and quota refusals by a middleware that reads the routes'
  ApiErrors, so no route has to remember to count;
- live calls, flush lag and late outbound frames read at scrape time by a collector, so the media
  path does no work for them;
- event-loop lag by a small task (signaling/loop_lag.py), meter flush duration told by the flusher.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Iterator

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from media.call_metrics import PREFIX, CallMetrics
from media.frame_clock import frame_clock
from signaling import keys
from signaling.auth import bearer_token
from signaling.errors import ApiError, error_middleware
from signaling.loop_lag import watch_loop_lag

# The routes that create a session, and the offer that starts its call (refused when the node is full).
CREATE_ROUTES = {("POST", "/api/v1/sessions"), ("POST", "/api/v1/avatar/sessions/start")}
OFFER_ROUTE = ("POST", "/api/v1/sessions/{session_id}/offer")
# Error codes that are a refusal by policy or capacity, not a malformed request.
REFUSAL_CODES = {"quota_exceeded", "too_many_calls", "rate_limited", "draining", "at_capacity", "avatar_unavailable"}
FLUSH_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class AppMetrics:
    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self.calls = CallMetrics(registry)
        self.sessions_created = Counter(PREFIX + "sessions_created_total", "Sessions created (201)", registry=registry)
        self.sessions_refused = Counter(
            PREFIX + "sessions_refused_total", "Session creations and offers refused, by reason", ["reason"],
            registry=registry,
        )
        self.quota_refusals = Counter(
            PREFIX + "quota_refusals_total", "Requests refused with quota_exceeded, by route", ["route"], registry=registry
        )
        self.flush_seconds = Histogram(
            PREFIX + "usage_flush_seconds", "Duration of a usage meter flush to Postgres", buckets=FLUSH_BUCKETS,
            registry=registry,
        )
        self.flush_failures = Counter(PREFIX + "usage_flush_failures_total", "Usage flushes that failed", registry=registry)
        self.loop_lag = Gauge(
            PREFIX + "event_loop_lag_seconds", "Oversleep of the last 0.5 s sleep on the event loop", registry=registry
        )
        self.loop_lag_seconds = Histogram(
            PREFIX + "event_loop_oversleep_seconds", "Oversleep of every 0.5 s sleep on the event loop",
            buckets=LAG_BUCKETS, registry=registry,
        )

    def on_flushed(self, seconds: float, ok: bool) -> None:
        self.flush_seconds.observe(seconds)
        if not ok:
            self.flush_failures.inc()

    def on_loop_lag(self, lag_s: float) -> None:
        self.loop_lag.set(lag_s)
        self.loop_lag_seconds.observe(lag_s)

    def on_error(self, method: str, route: str | None, code: str) -> None:
        if code == "quota_exceeded" and route is not None:
            self.quota_refusals.labels(route=f"{method} {route}").inc()
        if code in REFUSAL_CODES and ((method, route) in CREATE_ROUTES or (method, route) == OFFER_ROUTE):
            self.sessions_refused.labels(reason=code).inc()


METRICS = web.AppKey("metrics", AppMetrics)


class _ScrapeTimeCollector(Collector):
    """What is already counted elsewhere, read when Prometheus asks."""

    def __init__(self, app: web.Application, started_at: float) -> None:
        self._app = app
        self._started_at = started_at

    def collect(self) -> Iterator[Metric]:
        calls = self._app[keys.CALLS]
        yield GaugeMetricFamily(PREFIX + "live_calls", "Calls with media that have not ended", value=len(calls.live_calls()))
        yield GaugeMetricFamily(PREFIX + "session_lobbies", "Sessions waiting for their offer here", value=calls.lobbies)
        flusher = calls.accounting.flusher
        last = flusher.last_success_at if flusher.last_success_at is not None else self._started_at
        yield GaugeMetricFamily(
            PREFIX + "usage_flush_lag_seconds", "Seconds since usage was last written to Postgres in full",
            value=max(0.0, time.monotonic() - last),
        )
        yield GaugeMetricFamily(
            PREFIX + "usage_pending_ends", "Ended calls whose end waits to be written", value=flusher.pending_ends
        )
        yield GaugeMetricFamily(PREFIX + "draining", "1 while this node drains", value=int(self._app[keys.DRAINING].draining))
        try:
            clock = frame_clock()  # the running loop's shared 20 ms outbound clock (media/frame_clock.py)
        except RuntimeError:  # collected outside the loop: nothing to read
            return
        yield CounterMetricFamily(
            PREFIX + "outbound_frames_late",
            "Ticks of the outbound frame clock over 60 ms late (each re-anchors it; every live call's frame was late)",
            value=clock.reanchored,
        )


@web.middleware
async def count_refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sessions created and refused, read off the routes' answers.

    It sits just inside error_middleware: the routes' ApiErrors pass through it, and so does the 429
    the request rate limiter (the next middleware) answers without raising.
    """
    try:
        response = await handler(request)
    except ApiError as exc:
        request.app[METRICS].on_error(request.method, _canonical(request), exc.code)
        raise
    if response.status == 201 and (request.method, _canonical(request)) in CREATE_ROUTES:
        request.app[METRICS].sessions_created.inc()
    elif response.status == 429:
        request.app[METRICS].on_error(request.method, _canonical(request), "rate_limited")
    return response


def _canonical(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus text; with METRICS_TOKEN set, only for `Authorization: Bearer <METRICS_TOKEN>`."""
    expected = request.app[keys.SETTINGS].metrics_token
    if expected and not hmac.compare_digest(bearer_token(request).encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "the metrics token is required (Authorization: Bearer <METRICS_TOKEN>)")
    return web.Response(body=generate_latest(request.app[METRICS].registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _observe(app: web.Application) -> AsyncIterator[None]:
    """After storage and calls exist: hook the registry and the flusher, start the loop-lag monitor."""
    metrics = app[METRICS]
    calls = app[keys.CALLS]
    calls.on_answered = metrics.calls.call_answered
    calls.accounting.flusher.on_flushed = metrics.on_flushed
    collector = _ScrapeTimeCollector(app, time.monotonic())
    metrics.registry.register(collector)
    monitor = asyncio.ensure_future(watch_loop_lag(metrics.on_loop_lag))
    try:
        yield
    finally:
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        metrics.registry.unregister(collector)


def install_metrics(app: web.Application) -> None:
    """GET /metrics and what feeds it; call after the cleanup context that opens storage and calls."""
    app[METRICS] = AppMetrics()
    # Right after error_middleware (the outermost), before the rate limiter: see count_refusals.
    outermost = [m for m in app.middlewares if m is error_middleware]
    app.middlewares.insert(app.middlewares.index(outermost[0]) + 1 if outermost else 0, count_refusals)
    app.router.add_get("/metrics", metrics_page)
    app.cleanup_ctx.append(_observe)
