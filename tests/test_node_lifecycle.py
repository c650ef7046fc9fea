"""Node identity and liveness, and the graceful drain, with real server processes on one Postgres."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from signaling.auth import TokenAuthority
from signaling.drain import NODE_ID_TAKEN, Drain
from signaling.limits import Limits
from signaling.node_liveness import NodeLiveness
from signaling.settings import default_node_id
from storage.database import Database, open_database
from storage.embedded import EmbeddedPostgres
from storage.node_lock import NodeIdTaken, NodeLock
from storage.nodes import NodeRepository
from tests.conftest import TEST_JWT_SECRET, free_port
from tests.rtc_client import PcmSourceTrack, RtcClient, sine
from tests.test_metering_processes import ROOT, ServerProcess

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKENS = TokenAuthority(TEST_JWT_SECRET)


class Node(ServerProcess):
    """A server process that may go without NODE_ID, take CLI arguments, or be refused; stderr goes to a file."""

    def __init__(self, database: Database, tmp_path: Path, *, node_id: str | None, args: tuple[str, ...] = (), **env: str) -> None:
        super().__init__(database, tmp_path, node_id=node_id or "", **env)
        if node_id is None:
            del self.env["NODE_ID"]
        self.args = args
        self.log_path = tmp_path / f"node-{uuid.uuid4().hex[:8]}.log"

    def _spawn(self) -> subprocess.Popen[str]:
        with self.log_path.open("w") as log:
            return subprocess.Popen(
                [sys.executable, "run.py", *self.args], cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True
            )

    async def start(self) -> Node:
        self.proc = self._spawn()
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(self.proc.stdout.readline)
        assert line.startswith("Serving on "), (line, self.stderr())
        self.base_url = line.split()[-1]
        self.port = int(self.base_url.rsplit(":", 1)[1])
        return self

    async def refused(self) -> tuple[int, str]:
        """Start a process that must not serve: its exit status and stderr."""
        self.proc = self._spawn()
        status = await self.exit_status(60)
        assert status is not None, "the process kept running"
        return status, self.stderr()

    def stderr(self) -> str:
        return self.log_path.read_text()

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def exit_status(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        # Tests end their nodes at once (SIGINT), whatever calls are left.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


async def live_call(http: aiohttp.ClientSession, node: Node, user: str) -> RtcClient:
    client = RtcClient(node.base_url, TOKENS.issue(user), source=PcmSourceTrack(sine(440, 120)))
    await client.connect(http)
    await client.wait_connected()
    return client


async def assert_alive(client: RtcClient, database: Database) -> None:
    """Connected, media still echoing back, and its session not ended."""
    assert client.pc is not None and client.pc.connectionState == "connected"
    before = client.recorder.frames
    await asyncio.sleep(0.5)
    assert client.recorder.frames - before >= 10, (before, client.recorder.frames)
    row = await database.pool.fetchrow("select status, end_reason from user_sessions where id = $1", uuid.UUID(client.session_id))
    assert row["status"] != "ended", dict(row)


async def end_reason(database: Database, client: RtcClient) -> str | None:
    return await database.pool.fetchval("select end_reason from user_sessions where id = $1", uuid.UUID(client.session_id))


async def readyz(http: aiohttp.ClientSession, node: Node) -> tuple[int, dict[str, object]]:
    async with http.get(f"{node.base_url}/readyz") as resp:
        return resp.status, await resp.json()


# -- identity -------------------------------------------------------------------------------------


async def test_drain_timeout_setting() -> None:
    assert Limits.from_env({}).drain_timeout_s == 300.0
    assert Limits.from_env({"DRAIN_TIMEOUT_S": "0"}).drain_timeout_s == 0.0  # no wait
    with pytest.raises(ValueError, match="DRAIN_TIMEOUT_S .*0 = no wait"):
        Limits.from_env({"DRAIN_TIMEOUT_S": "-1"})
    assert default_node_id(8123) == f"{socket.gethostname()}:8123"


async def test_a_second_process_with_the_same_node_id_exits_2(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    node_id = f"twin-{uuid.uuid4().hex[:6]}"
    first = await Node(database, tmp_path, node_id=node_id).start()
    second = Node(database, tmp_path, node_id=node_id)
    client = None
    try:
        client = await live_call(http, first, "twin-user")
        status, stderr = await second.refused()
        assert status == 2, stderr
        assert stderr.strip().splitlines() == [f"another live process already runs as NODE_ID={node_id}"], stderr
        # The first one never noticed: its call goes on and it still takes new sessions.
        await assert_alive(client, database)
        assert (await readyz(http, first))[0] == 200
        async with http.post(f"{first.base_url}/api/v1/sessions", json={}, headers=client.headers) as resp:
            assert resp.status == 201
    finally:
        if client is not None:
            await client.close()
        first.stop()
        second.stop()


async def test_two_ports_on_one_host_are_two_nodes(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    # The same PORT in the environment for both (as from one .env), the real port given on the
    # command line: --port for one, 0 (whatever is free) for the other.
    env = {"PORT": str(free_port())}
    first = await Node(database, tmp_path, node_id=None, args=("--port", str(free_port())), **env).start()
    second = None
    clients: list[RtcClient] = []
    try:
        clients.append(await live_call(http, first, "ports-user-a"))
        second = await Node(database, tmp_path, node_id=None, args=("--port", "0"), **env).start()
        assert second.port not in (0, first.port, int(env["PORT"]))
        clients.append(await live_call(http, second, "ports-user-b"))
        host = socket.gethostname()
        for client, node in zip(clients, (first, second)):
            sid = uuid.UUID(client.session_id)
            assert await database.pool.fetchval("select node_id from user_sessions where id = $1", sid) == f"{host}:{node.port}"
        # Neither start ended the other's call.
        for client in clients:
            await assert_alive(client, database)
    finally:
        for client in clients:
            await client.close()
        first.stop()
        if second is not None:
            second.stop()


# -- graceful drain ---------------------------------------------------------------------------------


async def test_sigterm_drains_until_the_last_call_hangs_up(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    node = await Node(database, tmp_path, node_id=f"drain-{uuid.uuid4().hex[:6]}").start()
    client = None
    try:
        client = await live_call(http, node, "drain-user")
        waiting = RtcClient(node.base_url, TOKENS.issue("drain-user"))
        await waiting.create_session(http)  # made before the drain, offered during it
        node.send(signal.SIGTERM)
        status, body = await readyz(http, node)
        assert (status, body["error"]["code"]) == (503, "draining")  # type: ignore[index]
        async with http.post(f"{node.base_url}/api/v1/sessions", json={}, headers=client.headers) as resp:
            assert resp.status == 503 and resp.headers.get("Retry-After")
            assert (await resp.json())["error"]["code"] == "draining"
        async with http.post(
            f"{node.base_url}/api/v1/sessions/{waiting.session_id}/offer", json={"sdp": "v=0", "type": "offer"}, headers=waiting.headers
        ) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "draining"
        # The live call goes on through the drain.
        await asyncio.sleep(2.0)
        assert node.running
        await assert_alive(client, database)
        await client.hangup(http)
        # The last call ended: the process writes it and exits on its own.
        assert await node.exit_status(15) == 0, node.stderr()
        assert await end_reason(database, client) == "hangup"
    finally:
        if client is not None:
            await client.close()
        node.stop()


async def test_drain_timeout_ends_calls_with_server_shutdown(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    node = await Node(database, tmp_path, node_id=f"drain-t-{uuid.uuid4().hex[:6]}", DRAIN_TIMEOUT_S="3").start()
    client = None
    try:
        client = await live_call(http, node, "drain-t-user")
        began = time.monotonic()
        node.send(signal.SIGTERM)
        await asyncio.sleep(1.5)
        await assert_alive(client, database)
        assert await node.exit_status(20) == 0, node.stderr()
        assert time.monotonic() - began >= 3.0
        assert await end_reason(database, client) == "server_shutdown"
    finally:
        if client is not None:
            await client.close()
        node.stop()


async def test_a_second_sigterm_ends_everything_at_once(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    node = await Node(database, tmp_path, node_id=f"drain-2-{uuid.uuid4().hex[:6]}").start()  # DRAIN_TIMEOUT_S 300
    client = None
    try:
        client = await live_call(http, node, "drain-2-user")
        node.send(signal.SIGTERM)
        await asyncio.sleep(1.0)
        await assert_alive(client, database)
        node.send(signal.SIGTERM)
        assert await node.exit_status(10) == 0, node.stderr()
        assert await end_reason(database, client) == "server_shutdown"
    finally:
        if client is not None:
            await client.close()
        node.stop()


# -- liveness: a Postgres of these tests' own, stopped and started again --------------------------------


@pytest.fixture(scope="module")
async def own_pg(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[EmbeddedPostgres, Database]]:
    root = tmp_path_factory.mktemp("own-pg")
    server = EmbeddedPostgres(root / "data")
    db = await open_database(await server.start(), root / "unused")
    yield server, db
    await db.close()
    await server.stop()


async def restart(server: EmbeddedPostgres, down_s: float) -> None:
    await server.stop()
    await asyncio.sleep(down_s)
    await server.start()


async def test_a_shared_outage_reaps_nobody(own_pg: tuple[EmbeddedPostgres, Database], tmp_path: Path, http: aiohttp.ClientSession) -> None:
    server, db = own_pg
    stale = 3.0
    nodes = [
        await Node(db, tmp_path, node_id=f"outage-{i}-{uuid.uuid4().hex[:6]}", NODE_STALE_SECONDS=str(stale)).start()
        for i in range(2)
    ]
    clients: list[RtcClient] = []
    try:
        for i, node in enumerate(nodes):
            clients.append(await live_call(http, node, f"outage-user-{i}"))
        await restart(server, down_s=2 * stale)  # every heartbeat is older than NODE_STALE_SECONDS now
        # Long enough for each node to be connected again for more than a stale period, and reap.
        await asyncio.sleep(3 * stale)
        for client in clients:
            await assert_alive(client, db)
        for node in nodes:
            assert (await readyz(http, node))[0] == 200  # each took its NODE_ID lock again
        # Reaping still works once the nodes are connected again: a node killed now is reaped.
        nodes[1].kill()
        for _ in range(100):
            if await end_reason(db, clients[1]) is not None:
                break
            await asyncio.sleep(0.1)
        assert await end_reason(db, clients[1]) == "node_lost"
        await assert_alive(clients[0], db)
    finally:
        for client in clients:
            await client.close()
        for node in nodes:
            node.stop()


async def test_node_lock_is_taken_again_after_a_restart_unless_another_took_it(own_pg: tuple[EmbeddedPostgres, Database]) -> None:
    server, db = own_pg
    node_id = f"lock-{uuid.uuid4().hex[:6]}"
    mine, other = NodeLock(db.url, node_id), NodeLock(db.url, node_id)
    try:
        await mine.acquire()
        with pytest.raises(NodeIdTaken, match=f"NODE_ID={node_id}"):
            await other.acquire()
        # A restart drops the lock; with nobody else asking, it is ours again.
        await restart(server, down_s=0.5)
        assert await mine.check()
        with pytest.raises(NodeIdTaken):
            await other.acquire()
        # Another process that takes it while our connection is down has it; we lose.
        await restart(server, down_s=0.5)
        await other.acquire()
        assert not await mine.check()
    finally:
        await mine.release()
        await other.release()


async def test_node_lock_ends_its_own_stale_session(own_pg: tuple[EmbeddedPostgres, Database]) -> None:
    _, db = own_pg
    node_id = f"stale-{uuid.uuid4().hex[:6]}"
    lock = NodeLock(db.url, node_id)
    await lock.acquire()
    # Our side lost the connection, Postgres has not noticed: its session still holds the lock.
    forgotten = lock._conn
    lock._conn = None
    try:
        assert await lock.check()  # that session was ours: ended, and the lock taken again
        assert forgotten is not None
        await asyncio.sleep(0.1)
        with pytest.raises(Exception):
            await forgotten.fetchval("select 1")
        with pytest.raises(NodeIdTaken):
            await NodeLock(db.url, node_id).acquire()
    finally:
        await lock.release()
        if forgotten is not None:
            forgotten.terminate()


async def test_liveness_reaps_only_after_a_stale_period_connected(own_pg: tuple[EmbeddedPostgres, Database]) -> None:
    server, db = own_pg
    node_id = f"live-{uuid.uuid4().hex[:6]}"
    lock, taker, drain = NodeLock(db.url, node_id), NodeLock(db.url, node_id), Drain()
    await lock.acquire()
    now = [1000.0]
    liveness = NodeLiveness(NodeRepository(db.pool), lock, node_id, 3.0, lambda: drain.begin(NODE_ID_TAKEN), clock=lambda: now[0])
    try:
        assert await liveness.beat()
        now[0] += 0.9
        assert await liveness.beat()
        now[0] += 0.9
        assert await liveness.beat()
        now[0] += 0.9
        assert await liveness.beat()
        assert not liveness.may_reap()  # 2.7 s connected
        now[0] += 0.9
        assert await liveness.beat()
        assert liveness.may_reap()  # 3.6 s
        now[0] += 3.0
        assert not liveness.may_reap()  # no heartbeat for two intervals: the link is not known to be up
        await server.stop()
        assert not await liveness.beat()
        await server.start()
        assert await liveness.beat()
        assert not liveness.may_reap()  # connected again, but for less than a stale period
        # Another process took NODE_ID while the database was away: this node drains.
        await restart(server, down_s=0.2)
        await taker.acquire()
        assert not await liveness.beat()
        assert liveness.lost and drain.draining and drain.reason == NODE_ID_TAKEN
    finally:
        await lock.release()
        await taker.release()
