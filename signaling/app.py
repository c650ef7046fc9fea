"""Assembling the server: settings -> storage -> calls -> routes, and tearing it all down again."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter
from collections.abc import AsyncIterator

from aiohttp import web
from aiortc import RTCIceServer

from media.aiortc_internals import check_aiortc
from media.call_accounting import Accounting
from media.calls import CallRegistry
from media.pipelines import start_pipelines
from media.quota_guard import QuotaPolicy
from media.turn_detector import TurnConfig
from media.usage_flusher import UsageFlusher
from signaling import events_ws, keys  # noqa: F401  (registers its route on sessions_api.routes)
from signaling.auth import TokenAuthority
from signaling.errors import error_middleware
from signaling.pages import STATIC_DIR, dev_routes
from signaling.pages import routes as page_routes
from signaling.rate_limit import rate_limit
from signaling.security_headers import add_security_headers
from signaling.sessions_api import routes as session_routes
from signaling.settings import Settings
from signaling.usage_api import routes as usage_routes
from storage.avatar_usage import AvatarSessionRepository
from storage.database import open_database
from storage.nodes import NodeRepository
from storage.quotas import QuotaRepository
from storage.sessions import SessionRepository
from storage.usage import UsageRepository
from storage.users import UserRepository

log = logging.getLogger(__name__)

_JANITOR_INTERVAL_S = 30.0


def rtc_ice_servers(raw: list[dict[str, object]]) -> list[RTCIceServer]:
    servers = []
    for entry in raw:
        urls = entry.get("urls")
        if not isinstance(urls, (str, list)):
            raise ValueError("each ICE server needs `urls`")
        servers.append(
            RTCIceServer(urls=urls, username=entry.get("username"), credential=entry.get("credential"))  # type: ignore[arg-type]
        )
    return servers


def build_app(settings: Settings) -> web.Application:
    check_aiortc()  # before anything starts: an aiortc without what we reach into must not serve
    # The first middleware is the outermost: the rate limiter's 429 passes out through error_middleware.
    limiter = rate_limit(settings.limits.rate_limit_requests_per_minute)
    app = web.Application(middlewares=[error_middleware, limiter], client_max_size=settings.max_body_bytes)
    app.on_response_prepare.append(add_security_headers)
    app[keys.SETTINGS] = settings
    app[keys.MAX_BODY_BYTES] = settings.max_body_bytes
    app[keys.TOKENS] = TokenAuthority(settings.resolve_jwt_secret(), settings.jwt_audience, settings.jwt_issuer)
    app[keys.WEBSOCKETS] = weakref.WeakSet()
    app[keys.SESSION_SOCKETS] = Counter()
    app.add_routes(page_routes)
    app.add_routes(session_routes)
    app.add_routes(usage_routes)
    if settings.dev_mode:
        app.add_routes(dev_routes)
    app.router.add_static("/static/", STATIC_DIR)
    app.cleanup_ctx.append(_storage_and_calls)
    # Calls end first so every browser still hears its "ended" event, then the sockets close.
    app.on_shutdown.append(_end_calls)
    app.on_shutdown.append(_close_websockets)
    return app


async def _storage_and_calls(app: web.Application) -> AsyncIterator[None]:
    settings: Settings = app[keys.SETTINGS]
    db = await open_database(settings.database_url, settings.pgdata)
    app[keys.DB] = db
    app[keys.USERS] = UserRepository(db.pool)
    app[keys.SESSIONS] = SessionRepository(db.pool)
    try:
        pipelines = await start_pipelines(
            settings.pipeline,
            settings.engines,
            TurnConfig(end_of_turn_silence_ms=settings.end_of_turn_ms, max_turn_ms=settings.limits.max_turn_seconds * 1000),
        )
    except BaseException:
        await db.close()
        raise
    app[keys.USAGE] = UsageRepository(db.pool)
    app[keys.QUOTAS] = QuotaRepository(db.pool)
    app[keys.NODES] = NodeRepository(db.pool)

    def accounting(registry: CallRegistry) -> Accounting:
        flusher = UsageFlusher(
            registry.live_calls, app[keys.USAGE], app[keys.SESSIONS], app[keys.QUOTAS], app[keys.NODES], settings.node_id
        )
        policy = QuotaPolicy(chunk_us=round(settings.quota_chunk_seconds * 1_000_000))
        return Accounting(
            flusher,
            app[keys.QUOTAS],
            app[keys.USAGE],
            policy,
            AvatarSessionRepository(db.pool),
            settings.avatar_cost_per_minute,
            app[keys.SESSIONS],
            settings.node_id,
            pipelines.usage_types,
        )

    calls = CallRegistry(
        ice_servers=rtc_ice_servers(settings.ice_servers),
        pipeline_factory=pipelines.factory,
        avatar_factory=pipelines.avatar_factory,
        limits=settings.limits.call,
        max_calls=settings.limits.max_calls,
        accounting=accounting,
    )
    app[keys.CALLS] = calls
    # Calls this node owned before a crash cannot be live now: end them from their last flushed totals.
    await app[keys.NODES].end_sessions_of(settings.node_id, "node_restarted")
    await app[keys.NODES].heartbeat(settings.node_id)
    background = [
        asyncio.ensure_future(calls.accounting.flusher.run()),
        asyncio.ensure_future(_janitor(app[keys.SESSIONS], app[keys.NODES], settings.node_stale_seconds)),
    ]
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await calls.close_all("server_shutdown")
        await calls.accounting.flusher.flush()
        await pipelines.aclose()
        await db.close()


async def _end_calls(app: web.Application) -> None:
    await app[keys.CALLS].close_all("server_shutdown")


async def _janitor(sessions: SessionRepository, nodes: NodeRepository, node_stale_s: float) -> None:
    """Sessions never offered expire; calls of nodes that stopped heartbeating end."""
    while True:
        await asyncio.sleep(min(_JANITOR_INTERVAL_S, node_stale_s / 3))
        try:
            await sessions.end_expired_unused()
            await nodes.reap_dead(node_stale_s)
        except Exception:  # the database may be away for a while; try again next round
            log.warning("janitor round failed", exc_info=True)


async def _close_websockets(app: web.Application) -> None:
    for ws in list(app[keys.WEBSOCKETS]):
        await ws.close(code=1001, message=b"server shutdown")
