"""Every limit over real sockets: calls per user and per node, session rate, WebSockets, and their errors."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from signaling import keys
from signaling.limits import Limits
from storage.database import Database
from tests.conftest import server_settings, start_server
from tests.rtc_client import RtcClient

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def error_of(resp: aiohttp.ClientResponse) -> str:
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"]


async def create(http: aiohttp.ClientSession, base_url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
    async with http.post(f"{base_url}/api/v1/sessions", headers=headers) as resp:
        await resp.read()
        return resp


async def test_open_sessions_per_user(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    settings = server_settings(database, tmp_path)
    runner, server = await start_server(replace(settings, limits=replace(settings.limits, max_calls_per_user=3)))
    try:
        headers = server.auth(f"busy-{uuid.uuid4().hex[:6]}")
        ids = []
        for _ in range(3):
            async with http.post(f"{server.base_url}/api/v1/sessions", headers=headers) as resp:
                assert resp.status == 201
                ids.append((await resp.json())["session_id"])
        async with http.post(f"{server.base_url}/api/v1/sessions", headers=headers) as resp:
            assert resp.status == 429 and await error_of(resp) == "too_many_calls"
        # Someone else is not affected; and once one session ends, there is room again.
        assert (await create(http, server.base_url, server.auth())).status == 201
        async with http.delete(f"{server.base_url}/api/v1/sessions/{ids[0]}", headers=headers) as resp:
            assert resp.status == 200
        assert (await create(http, server.base_url, headers)).status == 201
        # Two nodes count the same sessions: the limit holds across them (both read Postgres).
        runner_b, node_b = await start_server(replace(server_settings(database, tmp_path), limits=server.settings.limits))
        try:
            async with http.post(f"{node_b.base_url}/api/v1/sessions", headers=headers) as resp:
                assert resp.status == 429 and await error_of(resp) == "too_many_calls"
        finally:
            await runner_b.cleanup()
    finally:
        await runner.cleanup()


async def test_concurrent_creations_cannot_pass_the_limit_together(
    database: Database, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = server_settings(database, tmp_path)
    runner, server = await start_server(replace(settings, limits=replace(settings.limits, max_calls_per_user=2)))
    try:
        headers = server.auth(f"rush-{uuid.uuid4().hex[:6]}")
        results = await asyncio.gather(*(create(http, server.base_url, headers) for _ in range(10)))
        assert sorted(r.status for r in results) == [201, 201] + [429] * 8
    finally:
        await runner.cleanup()


async def test_session_creation_rate(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    settings = server_settings(database, tmp_path)
    limits = replace(settings.limits, max_calls_per_user=0, rate_limit_sessions_per_minute=5)
    runner, server = await start_server(replace(settings, limits=limits))
    try:
        headers = server.auth(f"eager-{uuid.uuid4().hex[:6]}")
        for _ in range(5):
            assert (await create(http, server.base_url, headers)).status == 201
        async with http.post(f"{server.base_url}/api/v1/sessions", headers=headers) as resp:
            assert resp.status == 429 and await error_of(resp) == "rate_limited"
            assert 1 <= int(resp.headers["Retry-After"]) <= 60
        assert (await create(http, server.base_url, server.auth())).status == 201
    finally:
        await runner.cleanup()


async def test_calls_per_node(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    settings = server_settings(database, tmp_path)
    runner, server = await start_server(replace(settings, limits=replace(settings.limits, max_calls=1)))
    first = RtcClient(server.base_url, server.token())
    second = RtcClient(server.base_url, server.token())
    try:
        await first.connect(http)
        await first.wait_connected()
        await second.create_session(http)
        with pytest.raises(AssertionError, match="at_capacity"):
            await second.connect(http)
        assert len(server.app[keys.CALLS]) == 1
        await first.hangup(http)
        # The refused session was not spent: it takes its offer once there is room.
        second.pc = None
        await second.connect(http)
        await second.wait_connected()
        await second.hangup(http)
    finally:
        await first.close()
        await second.close()
        await runner.cleanup()


async def test_websockets_per_session_and_their_messages(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    settings = server_settings(database, tmp_path)
    limits = replace(settings.limits, max_websockets_per_session=2, max_ws_message_bytes=1024)
    runner, server = await start_server(replace(settings, limits=limits))
    try:
        client = RtcClient(server.base_url, server.token())
        session_id = await client.create_session(http)
        url = f"{server.base_url}/api/v1/sessions/{session_id}/events?access_token={client.token}"
        sockets = [await http.ws_connect(url) for _ in range(2)]
        async with http.get(url, headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as resp:
            assert resp.status == 429 and await error_of(resp) == "too_many_websockets"
        # An oversized message closes that socket only.
        await sockets[0].receive()  # its first state event
        await sockets[0].send_str("x" * 4096)
        while (await sockets[0].receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            pass
        await sockets[0].close()
        await sockets[1].receive()
        await sockets[1].send_json({"type": "ping"})
        assert (await sockets[1].receive_json())["type"] == "pong"
        # A flood of messages closes the flooding socket; the server lives on.
        for _ in range(200):
            if sockets[1].closed:
                break
            await sockets[1].send_json({"type": "ping"})
        while (await sockets[1].receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            pass
        await sockets[1].close()
        # Room again for a new socket once the others are gone.
        for _ in range(50):
            if not server.app[keys.SESSION_SOCKETS]:
                break
            await asyncio.sleep(0.05)
        again = await http.ws_connect(url)
        assert (await again.receive_json())["state"] == "new"
        await again.close()
    finally:
        await runner.cleanup()


async def test_every_limit_reads_from_the_environment_and_zero_is_unlimited() -> None:
    environ = {
        "MAX_CALLS_PER_USER": "0", "MAX_CALLS": "7", "RATE_LIMIT_SESSIONS_PER_MINUTE": "0",
        "RATE_LIMIT_REQUESTS_PER_MINUTE": "9", "CONNECT_TIMEOUT_S": "0", "MEDIA_TIMEOUT_S": "2.5",
        "MAX_CALL_SECONDS": "60", "MAX_TURN_SECONDS": "12", "MAX_WEBSOCKETS_PER_SESSION": "1",
    }
    limits = Limits.from_env(environ)
    assert (limits.max_calls_per_user, limits.max_calls, limits.rate_limit_sessions_per_minute) == (0, 7, 0)
    assert limits.rate_limit_requests_per_minute == 9 and limits.max_turn_seconds == 12
    assert (limits.call.connect_timeout_s, limits.call.media_timeout_s, limits.call.max_call_seconds) == (0, 2.5, 60)
    for bad in ({"MAX_CALLS": "-1"}, {"MEDIA_TIMEOUT_S": "nan"}, {"MAX_CALLS_PER_USER": "lots"}):
        with pytest.raises(ValueError):
            Limits.from_env(bad)
