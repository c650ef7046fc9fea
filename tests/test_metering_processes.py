"""Metering across server processes: a node killed mid-call, and one user's calls on two nodes sharing a quota."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from signaling.auth import TokenAuthority
from storage.database import Database
from tests.conftest import TEST_JWT_SECRET, free_port
from tests.rtc_client import PcmSourceTrack, RtcClient, sine

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parent.parent


class ServerProcess:
    def __init__(self, database: Database, tmp_path: Path, *, node_id: str, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database.url,
            "VAR_DIR": str(tmp_path),
            "JWT_SECRET": TEST_JWT_SECRET,
            "PIPELINE": "loopback",
            "PORT": str(self.port),
            "NODE_ID": node_id,
            "LOG_LEVEL": "WARNING",
            **env,
        }
        self.proc: subprocess.Popen[str] | None = None

    async def start(self) -> ServerProcess:
        self.proc = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT, env=self.env, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(self.proc.stdout.readline)
        assert line.startswith("Serving on"), line
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # drains: calls still live would hold it up to DRAIN_TIMEOUT_S
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.terminate()  # a second SIGTERM ends them at once
                self.proc.wait(timeout=20)


async def test_sigkill_mid_call_loses_at_most_a_flush(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    node = f"kill-node-{uuid.uuid4().hex[:6]}"
    server = await ServerProcess(database, tmp_path, node_id=node).start()
    restarted = None
    client = RtcClient(server.base_url, TokenAuthority(TEST_JWT_SECRET).issue("kill-user"), source=PcmSourceTrack(sine(440, 60)))
    try:
        await client.connect(http)
        await client.wait_connected()
        await asyncio.sleep(4.0)
        server.kill()
        truth_s = client.source.frames_sent * 0.02
        await client.close()
        sid = uuid.UUID(client.session_id)
        assert await database.pool.fetchval("select status from user_sessions where id = $1", sid) != "ended"
        # Same node id and port: the restarted node ends the calls it owned, from their last flushed totals.
        restarted = await ServerProcess(database, tmp_path, node_id=node, port=server.port).start()
        row = await database.pool.fetchrow("select status, end_reason from user_sessions where id = $1", sid)
        assert (row["status"], row["end_reason"]) == ("ended", "node_restarted")
        mic = await database.pool.fetchval("select amount from session_meters where session_id = $1 and meter = 'mic'", sid)
        assert abs(mic / 1e6 - truth_s) <= 1.0, (mic, truth_s)
        ledger = await database.pool.fetchrow(
            "select used, reserved from usage_ledger where user_id = 'kill-user' and usage_type = 'mic_audio_seconds'"
        )
        assert ledger["used"] >= mic and ledger["reserved"] == 0
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()


async def test_dead_node_is_reaped_by_another(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    victim = await ServerProcess(database, tmp_path, node_id=f"victim-{uuid.uuid4().hex[:6]}").start()
    survivor = await ServerProcess(database, tmp_path, node_id=f"survivor-{uuid.uuid4().hex[:6]}", NODE_STALE_SECONDS="3").start()
    client = RtcClient(victim.base_url, TokenAuthority(TEST_JWT_SECRET).issue("reap-user"), source=PcmSourceTrack(sine(440, 60)))
    try:
        await client.connect(http)
        await client.wait_connected()
        await asyncio.sleep(1.5)
        victim.kill()
        await client.close()
        sid = uuid.UUID(client.session_id)
        for _ in range(100):
            if await database.pool.fetchval("select status from user_sessions where id = $1", sid) == "ended":
                break
            await asyncio.sleep(0.1)
        assert await database.pool.fetchval("select end_reason from user_sessions where id = $1", sid) == "node_lost"
    finally:
        victim.stop()
        survivor.stop()


async def test_two_nodes_one_user_never_overspend(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    chunk_s, limit_s = 1.0, 6.0
    env = {"QUOTA_CHUNK_SECONDS": str(chunk_s)}
    nodes = [
        await ServerProcess(database, tmp_path, node_id=f"pair-{i}-{uuid.uuid4().hex[:6]}", **env).start() for i in range(2)
    ]
    user = f"shared-{uuid.uuid4().hex[:6]}"
    tokens = TokenAuthority(TEST_JWT_SECRET)
    admin = {"Authorization": f"Bearer {tokens.issue('admin', admin=True)}"}
    async with http.put(f"{nodes[0].base_url}/api/v1/admin/users/{user}/quota", json={"limits": {"mic_audio_seconds": limit_s}}, headers=admin) as resp:
        assert resp.status == 200
    clients = [RtcClient(n.base_url, tokens.issue(user), source=PcmSourceTrack(sine(440, 60))) for n in nodes]
    try:
        for client in clients:
            await client.connect(http)
        sids = [uuid.UUID(c.session_id) for c in clients]
        for _ in range(300):
            rows = await database.pool.fetch("select end_reason from user_sessions where id = any($1::uuid[])", sids)
            if all(r["end_reason"] for r in rows):
                break
            await asyncio.sleep(0.1)
        assert [r["end_reason"] for r in rows] == ["quota_exhausted", "quota_exhausted"]
        used, reserved = await database.pool.fetchrow(
            "select used, reserved from usage_ledger where user_id = $1 and usage_type = 'mic_audio_seconds'", user
        )
        per_call = await database.pool.fetch("select amount from session_meters where meter = 'mic' and session_id = any($1::uuid[])", sids)
        assert used == sum(r["amount"] for r in per_call)
        # Each call may overrun by at most one chunk; none of the reservation is left behind.
        assert used <= (limit_s + 2 * chunk_s) * 1e6, used
        assert used >= (limit_s - 2 * chunk_s) * 1e6, used
        assert reserved == 0
    finally:
        for client in clients:
            await client.close()
        for node in nodes:
            node.stop()
