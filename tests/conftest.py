"""Shared fixtures: one real Postgres for the run and a real server on a free port."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from signaling.access_log import make_runner
from signaling.app import build_app
from signaling.auth import TokenAuthority
from signaling.limits import Limits
from signaling.settings import Settings
from storage.database import Database, open_database

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# tests/netns/ runs inside a network namespace of its own, file by file (tests/test_netns_suites.py);
# the main run does not collect it a second time.
collect_ignore_glob = [] if os.environ.get("NETNS_INSIDE") == "1" else ["netns/test_*.py"]
TEST_JWT_SECRET = "test-secret-" + "x" * 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def pg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pg")


@pytest.fixture(scope="session")
async def database(pg_root: Path) -> AsyncIterator[Database]:
    """DATABASE_URL if the environment names one, else an embedded PostgreSQL for this run."""
    db = await open_database(os.environ.get("DATABASE_URL"), pg_root / "data")
    yield db
    await db.close()


@dataclass
class RunningServer:
    base_url: str
    app: web.Application
    settings: Settings
    tokens: TokenAuthority

    def token(self, user_id: str | None = None, **kwargs: object) -> str:
        return self.tokens.issue(user_id or f"user-{uuid.uuid4().hex[:8]}", **kwargs)  # type: ignore[arg-type]

    def auth(self, user_id: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id)}"}


def server_settings(database: Database, tmp_path: Path, **overrides: object) -> Settings:
    port = free_port()
    base = Settings(
        host="127.0.0.1",
        port=port,
        node_id=f"test-node-{port}",
        dev_mode=True,
        database_url=database.url,
        var_dir=tmp_path,
        jwt_secret=TEST_JWT_SECRET,
        pipeline="loopback",
        # The suite makes many sessions for few users from one address: tests of the limits set them.
        limits=Limits(max_calls_per_user=0, rate_limit_sessions_per_minute=0, rate_limit_requests_per_minute=0),
    )
    return replace(base, **overrides)


async def start_server(settings: Settings) -> tuple[web.AppRunner, RunningServer]:
    app = build_app(settings)
    runner = make_runner(app, shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    server = RunningServer(
        f"http://{settings.host}:{settings.port}", app, settings, TokenAuthority(TEST_JWT_SECRET)
    )
    return runner, server


@pytest.fixture(scope="session")
async def loopback_server(database: Database, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    runner, server = await start_server(server_settings(database, tmp_path_factory.mktemp("var")))
    yield server
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
async def voice_server(database: Database, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    """A server running the voice loop with the offline engines."""
    runner, server = await start_server(server_settings(database, tmp_path_factory.mktemp("voice"), pipeline="voice"))
    yield server
    await runner.cleanup()
