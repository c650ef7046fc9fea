"""Entry point: `python run.py` serves; `token --user NAME` prints an access token; `migrate` migrates."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from aiohttp import web

from signaling.access_log import make_runner
from signaling.app import build_app
from signaling.auth import TokenAuthority
from signaling.settings import Settings, UnsafeSettings
from storage.database import open_database


async def serve(settings: Settings) -> None:
    app = build_app(settings)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    print(f"Serving on http://{settings.host}:{settings.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def migrate(settings: Settings) -> None:
    db = await open_database(settings.database_url, settings.pgdata, migrate=True, max_size=1)
    await db.close()
    print("migrations applied", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Realtime voice-and-avatar media server")
    parser.add_argument("--host", help="address to listen on (env HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (env PORT, default 8080)")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve (the default)")
    token = commands.add_parser("token", help="print a signed access token for a user")
    token.add_argument("--user", required=True, help="the user id (the token's sub claim)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--admin", action="store_true", help="give the token the admin role")
    commands.add_parser("migrate", help="apply database migrations and exit")
    args = parser.parse_args(argv)

    settings = Settings.from_env(os.environ)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = Settings(**{**settings.__dict__, **overrides})

    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "token":
            # Same secret as the server: JWT_SECRET, else the one kept in var/ (made if missing).
            secret = settings.resolve_jwt_secret(create=True)
            authority = TokenAuthority(secret, settings.jwt_audience, issuer=settings.jwt_issuer)
            print(authority.issue(args.user, args.ttl, admin=args.admin))
        elif args.command == "migrate":
            asyncio.run(migrate(settings))
        else:
            settings.check_safe_to_serve()
            asyncio.run(serve(settings))
    except UnsafeSettings as exc:
        # Unsafe configuration is a refusal, told apart from a runtime failure (1) by its status.
        print(f"refusing to serve: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
