"""Entry point: `python run.py` serves; `token --user NAME` prints an access token; `migrate` migrates."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
import socket
import sys
from dataclasses import replace

from aiohttp import web

from signaling.access_log import make_runner
from signaling import keys
from signaling.app import build_app
from signaling.auth import TokenAuthority
from signaling.drain import NODE_ID_TAKEN, SIGINT, SIGTERM, wait_for_calls
from signaling.settings import Settings, UnsafeSettings, default_node_id
from storage.database import open_database
from storage.node_lock import NodeIdTaken
from storage.token_cipher import TokenCipher
from storage.token_rotation import RotationReport, rotate_tokens


async def serve(settings: Settings) -> None:
    # Port 0 is bound before anything else, so NODE_ID's default names the port actually listened on.
    sock = socket.create_server((settings.host, 0)) if settings.port == 0 else None
    port = sock.getsockname()[1] if sock is not None else settings.port
    settings = replace(settings, port=port, node_id=os.environ.get("NODE_ID") or default_node_id(port))
    app = build_app(settings)
    # SIGTERM drains: no new calls, live ones go on for DRAIN_TIMEOUT_S. A second SIGTERM, or SIGINT, ends all now.
    # Set before start-up, so a signal while engines load is kept and answered once serving.
    drain = app[keys.DRAINING]
    at_once = asyncio.Event()

    def on_sigterm() -> None:
        if drain.draining:
            at_once.set()
        drain.begin(SIGTERM)

    def on_sigint() -> None:
        drain.begin(SIGINT)
        at_once.set()

    loop = asyncio.get_running_loop()
    # A fixed pool for what aiortc and the engines hand to the default executor (video frames, ADC).
    loop.set_default_executor(ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="asyncio"))
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    loop.add_signal_handler(signal.SIGINT, on_sigint)
    runner = make_runner(app)
    try:
        await runner.setup()  # NodeIdTaken when another live process runs as this NODE_ID
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    site = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
        # Everything made so far (modules, engines' clients and models) lives as long as the process: out
        # of the collector's sight, a full collection walks only what calls made (50-100 ms less each, at
        # 90 calls, and every call's frames wait for it).
        gc.collect()
        gc.freeze()
        print(f"Serving on http://{settings.host}:{settings.port}", flush=True)
        await drain.started.wait()
        calls = app[keys.CALLS]
        await wait_for_calls(
            lambda: len(calls), lambda: calls.accounting.flusher.pending_ends, settings.limits.drain_timeout_s, at_once
        )
    finally:
        await runner.cleanup()  # ends what is still live with server_shutdown and flushes it
    if drain.reason == NODE_ID_TAKEN:
        raise NodeIdTaken(settings.node_id)


async def migrate(settings: Settings) -> None:
    db = await open_database(settings.database_url, settings.pgdata, migrate=True, max_size=1)
    await db.close()
    print("migrations applied", flush=True)


async def rotate_keys(settings: Settings, cipher: TokenCipher) -> RotationReport:
    """Re-encrypt every stored avatar token under the newest key (safe while servers run, safe to re-run)."""
    db = await open_database(settings.database_url, settings.pgdata, migrate=True, max_size=2)
    try:
        report = await rotate_tokens(db.pool, cipher)
    finally:
        await db.close()
    print(
        f"avatar tokens under key {cipher.newest_key_id}: {report.rows_checked} checked, "
        f"{report.rows_reencrypted} re-encrypted, {report.plaintext_encrypted} plaintext encrypted, "
        f"{report.failures} failed",
        flush=True,
    )
    return report


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """EVENT_LOOP=uvloop (the default, where installed) or asyncio: libuv's loop costs less per packet
    (bench/load.py, voice pipeline, 10 calls speaking: 4.9% of a core per call on asyncio's, 3.4% on uvloop)."""
    choice = os.environ.get("EVENT_LOOP", "uvloop").strip().lower()
    if choice not in ("uvloop", "asyncio"):
        raise SystemExit(f"EVENT_LOOP must be uvloop or asyncio, not {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        logging.getLogger(__name__).warning("uvloop is not installed: serving on asyncio's own loop")
        return None
    return uvloop.new_event_loop


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
    commands.add_parser("rotate-keys", help="re-encrypt stored avatar tokens under the first AVATAR_TOKEN_KEYS key")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env(os.environ)
    except ValueError as exc:  # a malformed variable: one line naming it, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
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
        elif args.command == "rotate-keys":
            try:
                cipher = settings.token_cipher()  # AVATAR_TOKEN_KEYS; in DEV_MODE without them, the dev key
            except (ValueError, RuntimeError) as exc:  # bad or missing keys: a refusal, one line
                print(f"refusing to rotate: {exc}", file=sys.stderr)
                return 2
            if asyncio.run(rotate_keys(settings, cipher)).failures:
                return 1  # the rows that failed are logged by id; the rest are done
        else:
            settings.check_safe_to_serve()
            with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
                runner.run(serve(settings))
    except UnsafeSettings as exc:
        # Unsafe configuration is a refusal, told apart from a runtime failure (1) by its status.
        print(f"refusing to serve: {exc}", file=sys.stderr)
        return 2
    except NodeIdTaken as exc:
        # Also a refusal: starting this one would end the live calls of the process that holds NODE_ID.
        print(exc, file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
