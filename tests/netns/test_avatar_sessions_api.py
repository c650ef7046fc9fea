"""The avatar session endpoints of the product plan, and the sweeper that stops what a killed node left running."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from signaling import keys
from storage.database import Database
from tests.conftest import RunningServer, start_server
from tests.fakes.liveavatar_fake import DEFAULT_API_KEY, FakeLiveAvatar
from tests.fakes.livekit_fake import FakeLiveKitServer
from tests.netns.avatar_setup import avatar_settings, relayed_frames, stops_of, until, until_async
from tests.rtc_client import PcmSourceTrack, RtcClient, sine
from tests.test_metering_processes import ServerProcess

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def server(
    database: Database, tmp_path_factory: pytest.TempPathFactory, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar]
) -> AsyncIterator[RunningServer]:
    runner, running = await start_server(avatar_settings(database, tmp_path_factory.mktemp("seed"), fakes[1], pipeline="voice"))
    yield running
    await runner.cleanup()


async def test_start_speak_and_end_an_avatar_session(
    server: RunningServer, database: Database, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    _, liveavatar = fakes
    user = f"seed-{uuid.uuid4().hex[:6]}"
    headers = server.auth(user)
    async with http.post(
        f"{server.base_url}/api/v1/avatar/sessions/start",
        json={"avatar_id": "anna-public", "quality": "high", "voice_id": "en-US-warm"},
        headers=headers,
    ) as resp:
        assert resp.status == 201, await resp.text()
        started = await resp.json()
    for key in ("avatar_session_id", "heygen_session_id", "streaming_url", "session_token", "expires_at"):
        assert started[key], key
    sid = started["heygen_session_id"]
    fake_session = liveavatar.sessions[sid]
    assert fake_session.avatar_id == "anna-public"
    # The browser only meets us: our URL, our token (a token of this server for this user), never HeyGen's.
    assert started["streaming_url"].startswith(f"{server.base_url}/api/v1/sessions/")
    assert server.tokens.verify(started["session_token"]).user_id == user
    assert fake_session.session_token not in str(started)
    avatar_url = f"{server.base_url}/api/v1/avatar/sessions/{started['avatar_session_id']}"

    # Linked, described, and its tokens unreadable at rest.
    row = await database.pool.fetchrow(
        "select s.avatar_session_id, s.avatar_session_token, s.avatar_status, a.heygen_session_token, a.quality_setting,"
        " a.voice_id from user_sessions s join avatar_sessions a on a.user_session_id = s.id where a.id = $1",
        uuid.UUID(started["avatar_session_id"]),
    )
    assert row["avatar_session_id"] == started["avatar_session_id"]
    assert (row["quality_setting"], row["voice_id"]) == ("high", "en-US-warm")
    assert started["session_token"] not in row["avatar_session_token"]
    assert fake_session.session_token not in row["heygen_session_token"]
    store = server.app[keys.AVATARS].store
    assert store is not None and await store.avatar_link_token(uuid.UUID(started["session_id"])) == started["session_token"]
    async with http.get(avatar_url, headers=headers) as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "created"

    # Someone else sees nothing of it.
    stranger = server.auth(f"stranger-{uuid.uuid4().hex[:6]}")
    for method, url in (("GET", avatar_url), ("POST", f"{avatar_url}/speak"), ("DELETE", avatar_url)):
        async with http.request(method, url, json={"text": "hi"}, headers=stranger) as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "avatar_session_not_found"

    async with http.post(f"{avatar_url}/speak", json={"text": "too early"}, headers=headers) as resp:
        assert resp.status == 409, await resp.text()

    # The browser streams from our URL with our token.
    client = RtcClient(server.base_url, started["session_token"], want_video=True, raw_luma=True)
    client.session_id = started["session_id"]
    await client.connect(http)
    await client.wait_connected(15)
    await until(lambda: len(relayed_frames(client)) >= 3, 20, "the avatar's frames")
    async with http.post(f"{avatar_url}/speak", json={"text": "Welcome to the demo."}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        spoken = await resp.json()
    assert spoken["text"] == "Welcome to the demo." and spoken["by"] == "avatar"
    await until(lambda: bool(liveavatar.spoken(sid)), 10, "the speech at the avatar")
    call = server.app[keys.CALLS].get(uuid.UUID(started["session_id"]))
    assert call is not None and call.usage_snapshot() and call._pipeline.counters()["tts_characters"] >= len("Welcome to the demo.")
    async with http.get(avatar_url, headers=headers) as resp:
        assert (await resp.json())["status"] == "active"

    async with http.delete(avatar_url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
    await until(lambda: bool(stops_of(liveavatar, sid)), 10, "the stop")
    async with http.get(f"{server.base_url}/api/v1/sessions/{started['session_id']}", headers=headers) as resp:
        assert (await resp.json())["status"] == "ended"

    async def ended() -> bool:
        async with http.get(avatar_url, headers=headers) as resp:
            return (await resp.json())["status"] in ("ended", "stopped")

    await until_async(ended, 10, "the avatar session to end")
    await client.close()


async def test_bad_avatar_requests_are_refused(server: RunningServer, http: aiohttp.ClientSession) -> None:
    headers = server.auth()
    for body, code in (
        ({"quality": "ultra"}, "invalid_avatar"),
        ({"avatar_id": 5}, "invalid_avatar"),
        ({"voice_id": "x" * 300}, "invalid_avatar"),
    ):
        async with http.post(f"{server.base_url}/api/v1/avatar/sessions/start", json=body, headers=headers) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == code, body
    async with http.post(f"{server.base_url}/api/v1/sessions", json={"avatar": "yes"}, headers=headers) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_avatar"
    async with http.get(f"{server.base_url}/api/v1/avatar/sessions/not-a-uuid", headers=headers) as resp:
        assert resp.status == 404


async def test_the_sweeper_stops_what_a_killed_node_left_running(
    server: RunningServer, database: Database, tmp_path: Path, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    _, liveavatar = fakes
    victim = ServerProcess(
        database,
        tmp_path,
        node_id=f"doomed-{uuid.uuid4().hex[:6]}",
        DEV_MODE="1",  # its avatar tokens under the dev key of the shared JWT secret, as this node reads them
        AVATAR_ENGINE="liveavatar",
        LIVEAVATAR_API_KEY=DEFAULT_API_KEY,
        LIVEAVATAR_API_URL=liveavatar.api_url,
        MAX_CALLS_PER_USER="0",
        RATE_LIMIT_SESSIONS_PER_MINUTE="0",
        RATE_LIMIT_REQUESTS_PER_MINUTE="0",
    )
    await victim.start()
    client = RtcClient(victim.base_url, server.token(), source=PcmSourceTrack(sine(440, 60)), want_video=True, raw_luma=True)
    client.session_body = {"avatar": True}
    try:
        await client.connect(http)
        await client.wait_connected(15)
        await until(lambda: len(relayed_frames(client)) >= 3, 20, "the avatar's frames")
        sid = str(client.session["avatar"]["heygen_session_id"])  # type: ignore[index]
        victim.kill()  # no teardown runs: the paid session is left running
        await asyncio.sleep(1.0)
        assert not stops_of(liveavatar, sid)
        await asyncio.sleep(1.5)
        # Another node's sweep: the dead node's heartbeat is stale, its avatar session is stopped from the stored token.
        stopped = await server.app[keys.AVATARS].sweep_orphans(node_stale_after_s=2.0)
        assert stopped >= 1
        stops = stops_of(liveavatar, sid)
        assert stops and stops[0]["reason"] == "ZOMBIE_SESSION_REAP"
        status = await database.pool.fetchval("select session_status from avatar_sessions where heygen_session_id = $1", sid)
        assert status == "stopped"
        assert await server.app[keys.AVATARS].sweep_orphans(node_stale_after_s=2.0) == 0  # once only
    finally:
        victim.stop()
        await client.close()
