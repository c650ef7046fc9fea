"""Two server processes on one Postgres: a call lives on A, and B answers for it as A would."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from signaling.auth import TokenAuthority
from storage.database import Database
from tests.conftest import TEST_JWT_SECRET
from tests.probes import until
from tests.rtc_client import RtcClient, sine
from tests.test_metering_processes import ServerProcess

pytestmark = pytest.mark.asyncio(loop_scope="session")


def stop(node: ServerProcess) -> None:
    """Stop a node now: a second SIGTERM skips the drain."""
    if node.proc is None or node.proc.poll() is not None:
        return
    node.proc.terminate()
    try:
        node.proc.wait(timeout=2)
    except Exception:
        node.proc.terminate()
        node.proc.wait(timeout=20)


async def read_events(ws: aiohttp.ClientWebSocketResponse, into: list[dict[str, object]]) -> None:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            into.append(json.loads(message.data))


async def test_any_node_answers_for_a_call_on_another(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    a = ServerProcess(database, tmp_path / "a", node_id=f"node-a-{uuid.uuid4().hex[:6]}", PIPELINE="voice")
    b = ServerProcess(database, tmp_path / "b", node_id=f"node-b-{uuid.uuid4().hex[:6]}", PIPELINE="voice")
    await asyncio.gather(a.start(), b.start())
    token = TokenAuthority(TEST_JWT_SECRET).issue(f"roamer-{uuid.uuid4().hex[:6]}")
    headers = {"Authorization": f"Bearer {token}"}
    client = RtcClient(a.base_url, token)
    client.source.play(np.zeros(48_000 * 60, np.int16))
    early: list[dict[str, object]] = []
    try:
        # The session is made on B and its events socket opens on B, before any offer.
        async with http.post(f"{b.base_url}/api/v1/sessions", headers=headers) as resp:
            assert resp.status == 201
            client.session_id = (await resp.json())["session_id"]
        on_b = f"{b.base_url}/api/v1/sessions/{client.session_id}"
        ws_early = await http.ws_connect(f"{on_b}/events?access_token={token}")
        early_reader = asyncio.ensure_future(read_events(ws_early, early))
        # The offer goes to A: the call lives there.
        await client.connect(http)
        await client.wait_connected()
        assert await until(lambda: any(e.get("state") == "connected" for e in early), 5), early

        # A second offer anywhere is refused; the call stays one.
        async with http.post(f"{on_b}/offer", json={"sdp": client.pc.localDescription.sdp, "type": "offer"}, headers=headers) as resp:
            assert resp.status == 409
        # B reports A's live state and meters.
        async with http.get(on_b, headers=headers) as resp:
            assert (await resp.json())["call_state"] == "connected"
        await asyncio.sleep(1.0)
        async with http.get(f"{on_b}/usage", headers=headers) as resp:
            usage = await resp.json()
            mic = next(t for t in usage["tracks"] if t["track"] == "mic")
            assert mic["seconds"] > 0.5, usage
        async with http.post(f"{on_b}/ice", json={"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}, headers=headers) as resp:
            assert resp.status == 204, await resp.text()

        # A socket opened on B now follows A's call from its current state.
        late: list[dict[str, object]] = []
        ws_late = await http.ws_connect(f"{on_b}/events?access_token={token}")
        late_reader = asyncio.ensure_future(read_events(ws_late, late))
        assert await until(lambda: bool(late), 5)
        assert late[0]["type"] == "state" and late[0]["state"] == "connected"

        # A typed turn through B: the reply comes back to B and is spoken on A's call.
        client.recorder.reset()
        async with http.post(f"{on_b}/messages", json={"text": "hello there"}, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            reply = (await resp.json())["reply"]
        assert reply.startswith("Hello")
        assert await until(lambda: any(e["type"] == "agent_text" and e.get("final") for e in late), 5)
        await asyncio.sleep(1.0)
        heard = client.recorder.audio()
        assert np.sqrt(np.mean(heard.astype(np.float64) ** 2)) > 200  # the reply's speech arrived

        # Hang up through B: answered once the call has ended on A, within a second.
        started = time.monotonic()
        async with http.delete(on_b, headers=headers) as resp:
            assert resp.status == 200 and await resp.json() == {"status": "ended"}
        assert time.monotonic() - started < 1.0
        frames = client.recorder.frames
        await asyncio.sleep(0.5)
        assert client.recorder.frames - frames <= 3  # A stopped streaming
        for reader in (early_reader, late_reader):
            await asyncio.wait_for(reader, 5)
        for events in (early, late):
            states = [e["state"] for e in events if e["type"] == "state"]
            assert states[-1] == "ended" and events[-1]["reason"] == "hangup", states
            # In order, none twice: the relay keeps A's order.
            ts = [e["ts"] for e in events if "ts" in e]
            assert ts == sorted(ts)
        row = await database.pool.fetchrow("select status, end_reason, node_id from user_sessions where id = $1", uuid.UUID(client.session_id))
        assert (row["status"], row["end_reason"], row["node_id"]) == ("ended", "hangup", a.env["NODE_ID"])
    finally:
        await client.close()
        stop(a)
        stop(b)


async def test_offers_on_two_nodes_at_once_make_one_call(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    a = ServerProcess(database, tmp_path / "a", node_id=f"node-a-{uuid.uuid4().hex[:6]}")
    b = ServerProcess(database, tmp_path / "b", node_id=f"node-b-{uuid.uuid4().hex[:6]}")
    await asyncio.gather(a.start(), b.start())
    token = TokenAuthority(TEST_JWT_SECRET).issue(f"twice-{uuid.uuid4().hex[:6]}")
    headers = {"Authorization": f"Bearer {token}"}
    clients = [RtcClient(a.base_url, token), RtcClient(b.base_url, token)]
    try:
        for _ in range(5):
            async with http.post(f"{a.base_url}/api/v1/sessions", headers=headers) as resp:
                session_id = (await resp.json())["session_id"]
            for client in clients:
                client.session_id = session_id
                client.pc = None
            results = await asyncio.gather(*(c.connect(http, trickle=False) for c in clients), return_exceptions=True)
            refused = [r for r in results if isinstance(r, AssertionError)]
            assert sum(r is None for r in results) == 1 and len(refused) == 1, results
            assert "invalid_state" in str(refused[0]), refused
            async with http.delete(f"{a.base_url}/api/v1/sessions/{session_id}", headers=headers) as resp:
                assert resp.status == 200
            for client in clients:
                await client.close()
    finally:
        stop(a)
        stop(b)


async def test_requests_for_a_dead_nodes_call_end_it(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    stale = "2"
    a = ServerProcess(database, tmp_path / "a", node_id=f"node-a-{uuid.uuid4().hex[:6]}", NODE_STALE_SECONDS=stale)
    b = ServerProcess(database, tmp_path / "b", node_id=f"node-b-{uuid.uuid4().hex[:6]}", NODE_STALE_SECONDS=stale)
    await asyncio.gather(a.start(), b.start())
    token = TokenAuthority(TEST_JWT_SECRET).issue(f"orphan-{uuid.uuid4().hex[:6]}")
    headers = {"Authorization": f"Bearer {token}"}
    client = RtcClient(a.base_url, token)
    client.source.play(sine(300, 60))
    try:
        await client.connect(http)
        await client.wait_connected()
        await asyncio.sleep(1.5)  # a flush or two of its meters
        a.kill()
        on_b = f"{b.base_url}/api/v1/sessions/{client.session_id}"
        deadline = time.monotonic() + 15
        while True:
            async with http.post(f"{on_b}/messages", json={"text": "anyone there?"}, headers=headers) as resp:
                body = await resp.json()
            if resp.status == 409 and body["error"]["code"] == "session_ended":
                break
            assert resp.status == 503 and body["error"]["code"] == "node_unreachable", body
            assert time.monotonic() < deadline
        row = await database.pool.fetchrow("select status, end_reason from user_sessions where id = $1", uuid.UUID(client.session_id))
        assert (row["status"], row["end_reason"]) == ("ended", "node_lost")
        mic = await database.pool.fetchval(
            "select amount from session_meters where session_id = $1 and meter = 'mic'", uuid.UUID(client.session_id)
        )
        assert mic and mic > 500_000  # ended from its last flushed totals
    finally:
        await client.close()
        stop(a)
        stop(b)
