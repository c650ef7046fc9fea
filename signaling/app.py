"""Assembling the server: settings -> storage -> calls -> routes, and tearing it all down again."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiortc import RTCIceServer

from media.agent_sessions import AgentSessionOpener
from media.aiortc_internals import check_aiortc
from media.avatar_service import AvatarService
from media.call_accounting import Accounting
from media.calls import CallRegistry
from media.frame_clock import frame_clock
from media.full_collections import FullCollections
from media.pipelines import start_pipelines
from media.quota_guard import QuotaPolicy
from media.turn_detector import TurnConfig
from media.usage_flusher import UsageFlusher
from signaling import events_ws, keys  # noqa: F401  (registers its route on sessions_api.routes)
from signaling.auth import TokenAuthority
from signaling.avatar_api import routes as avatar_routes
from signaling.cluster import Cluster
from signaling.drain import NODE_ID_TAKEN, Drain
from signaling.errors import error_middleware
from signaling.pages import STATIC_DIR, dev_routes
from signaling.pages import routes as page_routes
from signaling.rate_limit import rate_limit
from signaling.security_headers import add_security_headers
from signaling.sessions_api import routes as session_routes
from signaling.node_liveness import NodeLiveness
from signaling.metrics import install_metrics
from signaling.openapi import install_openapi
from signaling.settings import Settings
from signaling.usage_api import routes as usage_routes
from signaling.history_api import routes as history_routes
from signaling.users_api import routes as users_routes
from signaling.voice_api import routes as voice_routes
from signaling.usage_daily_api import routes as usage_daily_routes
from storage.avatar_sessions import AvatarSessionStore
from storage.avatar_usage import AvatarSessionRepository
from storage.database import open_database
from storage.messages import MessageRepository
from storage.node_lock import NodeLock
from storage.nodes import NodeRepository
from storage.preferences import PreferencesRepository
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


def call_ice_servers(settings: Settings) -> Callable[[], list[RTCIceServer]]:
    """The ICE servers of each call's own peer connection, checked here once; TURN credentials minted per call."""
    static = rtc_ice_servers(settings.ice_servers)
    turn = settings.turn
    if turn is None:
        return lambda: list(static)
    # TURN first: aiortc uses only the first TURN URL it can, and ours is the one meant for it.
    return lambda: [*rtc_ice_servers([turn.server_credentials(settings.node_id, time.time())]), *static]


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
    app[keys.DRAINING] = Drain()
    app.add_routes(page_routes)
    app.add_routes(session_routes)
    app.add_routes(avatar_routes)
    app.add_routes(usage_routes)
    app.add_routes(history_routes)
    app.add_routes(voice_routes)
    app.add_routes(users_routes)
    app.add_routes(usage_daily_routes)
    if settings.dev_mode:
        app.add_routes(dev_routes)
    app.router.add_static("/static/", STATIC_DIR)
    app.cleanup_ctx.append(_full_collections)
    app.cleanup_ctx.append(_storage_and_calls)
    install_metrics(app)  # after storage and calls: it hooks into them
    install_openapi(app)  # GET /api/v1/openapi.json, GET /docs
    # Calls end first so every browser still hears its "ended" event, then the sockets close.
    app.on_shutdown.append(_end_calls)
    app.on_shutdown.append(_close_websockets)
    return app


async def _full_collections(app: web.Application) -> AsyncIterator[None]:
    """Full garbage collections right after the 20 ms clock's ticks (media/full_collections.py)."""
    full = FullCollections(asyncio.get_running_loop(), frame_clock())
    full.install()
    try:
        yield
    finally:
        full.uninstall()


async def _storage_and_calls(app: web.Application) -> AsyncIterator[None]:
    settings: Settings = app[keys.SETTINGS]
    db = await open_database(settings.database_url, settings.pgdata)
    app[keys.DB] = db
    app[keys.USERS] = UserRepository(db.pool)
    app[keys.PREFERENCES] = PreferencesRepository(db.pool)
    app[keys.SESSIONS] = SessionRepository(db.pool)
    node_lock = NodeLock(db.url, settings.node_id)
    try:
        # Before anything acts as this node: a second live process with this NODE_ID stops here.
        await node_lock.acquire()
        pipelines = await start_pipelines(
            settings.pipeline,
            settings.engines,
            TurnConfig(
                end_of_turn_silence_ms=settings.end_of_turn_ms,
                max_turn_ms=settings.limits.max_turn_seconds * 1000,
                unfinished_hold_ms=settings.end_of_turn_unfinished_ms,
            ),
            agent_store=app[keys.SESSIONS],
            voice_store=app[keys.SESSIONS],  # the TTS voice each session chose
            message_store=MessageRepository(db.pool),
        )
    except BaseException:
        await node_lock.release()
        await db.close()
        raise
    app[keys.USAGE] = UsageRepository(db.pool)
    app[keys.ENGINES] = pipelines.engines
    app[keys.QUOTAS] = QuotaRepository(db.pool)
    app[keys.NODES] = NodeRepository(db.pool)
    app[keys.AGENT_SESSIONS] = AgentSessionOpener(pipelines.engines.agent if pipelines.engines else None, app[keys.SESSIONS])
    cipher = settings.token_cipher() if settings.avatar_token_keys or settings.dev_mode else None
    avatars = app[keys.AVATARS] = AvatarService(
        pipelines.avatars,
        AvatarSessionStore(db.pool, cipher) if cipher is not None else None,
        app[keys.SESSIONS],
        AvatarSessionRepository(db.pool, cipher),
    )

    def accounting(registry: CallRegistry) -> Accounting:
        flusher = UsageFlusher(registry.live_calls, app[keys.USAGE], app[keys.SESSIONS], app[keys.QUOTAS])
        policy = QuotaPolicy(
            chunk_us=round(settings.quota_chunk_seconds * 1_000_000),
            max_chunk_us=round(settings.quota_chunk_max_seconds * 1_000_000),
        )
        return Accounting(
            flusher,
            app[keys.QUOTAS],
            app[keys.USAGE],
            policy,
            AvatarSessionRepository(db.pool, cipher),
            settings.avatar_cost_per_minute,
            app[keys.SESSIONS],
            settings.node_id,
            pipelines.usage_types,
            avatars,
        )

    calls = CallRegistry(
        ice_servers=call_ice_servers(settings),
        pipeline_factory=pipelines.factory,
        avatar_factory=pipelines.avatar_factory,
        limits=settings.limits.call,
        max_calls=settings.limits.max_calls,
        accounting=accounting,
        max_playback_hz=pipelines.max_playback_hz,
    )
    app[keys.CALLS] = calls
    cluster = app[keys.CLUSTER] = Cluster(app, settings.node_id, settings.node_stale_seconds)
    try:
        await cluster.start(db.url)
    except BaseException:
        await pipelines.aclose()
        await node_lock.release()
        await db.close()
        raise
    calls.on_claimed = cluster.announce_claim
    # Calls this node owned before a crash cannot be live now: end them from their last flushed totals.
    await app[keys.NODES].end_sessions_of(settings.node_id, "node_restarted")
    liveness = NodeLiveness(
        app[keys.NODES], node_lock, settings.node_id, settings.node_stale_seconds,
        on_lost=lambda: app[keys.DRAINING].begin(NODE_ID_TAKEN),
    )
    app[keys.NODE_LIVENESS] = liveness
    await liveness.beat()
    background = [
        asyncio.ensure_future(calls.accounting.flusher.run()),
        asyncio.ensure_future(liveness.run()),
        asyncio.ensure_future(_janitor(app[keys.SESSIONS], liveness, avatars, settings.node_stale_seconds)),
    ]
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await calls.close_all("server_shutdown")
        await calls.accounting.flusher.flush()
        await cluster.close()
        await pipelines.aclose()
        await node_lock.release()
        await db.close()


async def _end_calls(app: web.Application) -> None:
    await app[keys.CALLS].close_all("server_shutdown")


async def _janitor(sessions: SessionRepository, liveness: NodeLiveness, avatars: AvatarService, stale_s: float) -> None:
    """Sessions never offered expire; calls of nodes that stopped heartbeating end; their paid avatars stop."""
    while True:
        await asyncio.sleep(min(_JANITOR_INTERVAL_S, liveness.interval_s))
        try:
            await sessions.end_expired_unused()
            # Only a node that has itself reached the database for a whole stale period can tell a
            # silent node from an outage that silenced every node (node_liveness.py).
            await liveness.reap_dead()
            await avatars.sweep_orphans(stale_s)
        except Exception:  # the database may be away for a while; try again next round
            log.warning("janitor round failed", exc_info=True)


async def _close_websockets(app: web.Application) -> None:
    for ws in list(app[keys.WEBSOCKETS]):
        await ws.close(code=1001, message=b"server shutdown")
