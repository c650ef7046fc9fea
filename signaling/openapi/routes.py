"""GET /api/v1/openapi.json and the page that renders it, GET /docs (static/docs.html, no build step)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from signaling.openapi.spec import build_spec
from signaling.pages import STATIC_DIR

# The router is frozen once the app runs, so the document is built once, on first request.
_SPEC = web.AppKey("openapi_spec", dict)


async def openapi_json(request: web.Request) -> web.Response:
    cache: dict[str, Any] = request.app[_SPEC]
    if "spec" not in cache:
        cache["spec"] = build_spec(request.app)
    return web.json_response(cache["spec"], headers={"Cache-Control": "no-cache"})


async def docs_page(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "docs.html")


def install_openapi(app: web.Application) -> None:
    app[_SPEC] = {}
    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.router.add_get("/docs", docs_page)
