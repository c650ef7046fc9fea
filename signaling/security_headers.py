"""Headers that make every response safe to expose: no sniffing, no referrers, a CSP the page lives with."""

from __future__ import annotations

import re

from aiohttp import web

# The page (static/index.html, app.js) loads only its own files, fetches and opens its WebSocket on the same
# origin, and plays WebRTC streams. No inline script or style, no frames, no plugins.
_PAGE_POLICY = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "media-src 'self' blob: mediastream:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)

# Host as a browser sends it (name or [IPv6], optional port); anything else stays out of the header.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")

_FIXED = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP 2
}


def content_security_policy(host: str | None) -> str:
    """The page's policy; connect-src names ws:/wss: of this host since older browsers' 'self' omits them."""
    connect = "connect-src 'self'"
    if host and _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join((*_PAGE_POLICY, connect))


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: runs for every response, JSON, files, pages and WebSocket upgrades alike."""
    for name, value in _FIXED.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Content-Security-Policy", content_security_policy(request.host))
