"""The three routes bench/load.py drives, served for a baseline echo server run as a script.

Imported by bench/aiortc_echo_server.py and bench/pipecat_echo_server.py as a sibling module (they run
as scripts, the second in Pipecat's own venv, so it needs nothing but aiohttp): they supply what an
offer and a hang-up do; creating a session only names it.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.Response]]


async def create(request: web.Request) -> web.Response:
    return web.json_response({"session_id": uuid.uuid4().hex}, status=201)


def port_argument(description: str | None) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    return int(parser.parse_args().port)


def serve_echo(port: int, offer: Handler, hangup: Handler) -> None:
    """Serve until interrupted, saying "Serving on <url>" once listening (bench/load_servers.py waits for it)."""
    app = web.Application()
    app.add_routes([web.post("/api/v1/sessions", create), web.post("/api/v1/sessions/{id}/offer", offer),
                    web.delete("/api/v1/sessions/{id}", hangup)])  # fmt: skip
    web.run_app(app, host="127.0.0.1", port=port, print=lambda _: print(f"Serving on http://127.0.0.1:{port}", flush=True))
