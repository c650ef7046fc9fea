"""Health, readiness, the browser page, and the dev-only token endpoint."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from signaling import keys
from signaling.errors import ApiError, read_json

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

routes = web.RouteTableDef()
dev_routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    if request.app[keys.DRAINING].draining:  # first, and without the database: a balancer must see it at once
        return web.json_response({"error": {"code": "draining", "message": "this server is shutting down"}}, status=503)
    if await request.app[keys.DB].ping():
        return web.json_response({"status": "ready"})
    return web.json_response({"error": {"code": "not_ready", "message": "the database does not answer"}}, status=503)


@routes.get("/")
async def index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


@dev_routes.post("/dev/token")
async def dev_token(request: web.Request) -> web.Response:
    """Dev mode only: a token for any user name, so the page works without a login service."""
    body = await read_json(request, allow_empty=True)
    user_id = body.get("user_id", "dev-user")
    if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > 255 or "\x00" in user_id:
        raise ApiError(400, "invalid_user", "`user_id` must be a non-empty string of at most 255 characters, without NUL")
    token = request.app[keys.TOKENS].issue(user_id.strip(), ttl_seconds=12 * 3600)
    return web.json_response({"access_token": token, "user_id": user_id.strip()})
