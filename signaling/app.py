"""Assembling the server: settings -> storage -> calls -> routes, and tearing it all down again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator

from aiohttp import web
from aiortc import RTCIceServer

from media.calls import CallRegistry
from media.pipelines import start_pipelines
from media.turn_detector import TurnConfig
from signaling import events_ws, keys  # noqa: F401  (registers its route on sessions_api.routes)
from signaling.auth import TokenAuthority
from signaling.errors import error_middleware
from signaling.pages import STATIC_DIR, dev_routes
from signaling.pages import routes as page_routes
from signaling.sessions_api import routes as session_routes
from signaling.settings import Settings
from storage.database import open_database
from storage.sessions import SessionRepository
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
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    app[keys.SETTINGS] = settings
    app[keys.MAX_BODY_BYTES] = settings.max_body_bytes
    app[keys.TOKENS] = TokenAuthority(settings.resolve_jwt_secret(), settings.jwt_audience)
    app[keys.WEBSOCKETS] = weakref.WeakSet()
    app.add_routes(page_routes)
    app.add_routes(session_routes)
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
            settings.pipeline, settings.engines, TurnConfig(end_of_turn_silence_ms=settings.end_of_turn_ms)
        )
    except BaseException:
        await db.close()
        raise
    calls = CallRegistry(
        app[keys.SESSIONS],
        node_id=settings.node_id,
        ice_servers=rtc_ice_servers(settings.ice_servers),
        pipeline_factory=pipelines.factory,
    )
    app[keys.CALLS] = calls
    janitor = asyncio.ensure_future(_expire_unused_sessions(app[keys.SESSIONS]))
    try:
        yield
    finally:
        janitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await janitor
        await calls.close_all("server_shutdown")
        await pipelines.aclose()
        await db.close()


async def _end_calls(app: web.Application) -> None:
    await app[keys.CALLS].close_all("server_shutdown")


async def _expire_unused_sessions(sessions: SessionRepository) -> None:
    while True:
        await asyncio.sleep(_JANITOR_INTERVAL_S)
        try:
            await sessions.end_expired_unused()
        except Exception:  # the database may be away for a while; try again next round
            log.warning("could not expire unused sessions", exc_info=True)


async def _close_websockets(app: web.Application) -> None:
    for ws in list(app[keys.WEBSOCKETS]):
        await ws.close(code=1001, message=b"server shutdown")
