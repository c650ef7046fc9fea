"""Every way a call or its avatar ends stops the paid LiveAvatar session; every fault falls back, and the call lives."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from signaling import keys
from signaling.limits import Limits
from media.call_limits import CallLimits
from storage.database import Database
from tests.conftest import RunningServer, start_server
from tests.fakes.liveavatar_fake import FakeLiveAvatar
from tests.fakes.livekit_fake import FakeLiveKitServer
from tests.netns.avatar_setup import (
    avatar_client,
    avatar_settings,
    events_socket,
    heygen_session_of,
    relayed_frames,
    start_fakes,
    stops_of,
    until,
    until_async,
)
from tests.rtc_client import PcmSourceTrack, RtcClient, sine
from tests.test_metering import admin_set

pytestmark = pytest.mark.asyncio(loop_scope="session")

NO_LIMITS = Limits(max_calls_per_user=0, rate_limit_sessions_per_minute=0, rate_limit_requests_per_minute=0)


@pytest.fixture(scope="module")
async def server(
    database: Database, tmp_path_factory: pytest.TempPathFactory, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar]
) -> AsyncIterator[RunningServer]:
    settings = avatar_settings(database, tmp_path_factory.mktemp("exits"), fakes[1], pipeline="loopback", quota_chunk_seconds=1.0)
    runner, running = await start_server(settings)
    yield running
    await runner.cleanup()


async def follow(server: RunningServer, http: aiohttp.ClientSession, client: RtcClient) -> tuple[list[dict[str, object]], asyncio.Task[None]]:
    events: list[dict[str, object]] = []
    ws = await events_socket(server, http, client)

    async def run() -> None:
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    events.append(json.loads(message.data))
        finally:
            await ws.close()

    return events, asyncio.ensure_future(run())


def of(events: list[dict[str, object]], kind: str) -> list[dict[str, object]]:
    return [e for e in events if e.get("type") == kind]


async def stored_status(database: Database, heygen_session_id: str) -> str:
    return await database.pool.fetchval("select session_status from avatar_sessions where heygen_session_id = $1", heygen_session_id)


async def wait_stopped(liveavatar: FakeLiveAvatar, database: Database, sid: str) -> None:
    await until(lambda: bool(stops_of(liveavatar, sid)), 10, f"stop of {sid} at the avatar")

    async def final() -> bool:
        return await stored_status(database, sid) in ("ended", "stopped", "failed")

    await until_async(final, 10, "the stored status")


async def live_avatar(server: RunningServer, http: aiohttp.ClientSession, **kwargs: object) -> tuple[RtcClient, str]:
    client = await avatar_client(server, http, **kwargs)  # type: ignore[arg-type]
    await until(lambda: len(relayed_frames(client)) >= 3, 20, "the avatar's frames")
    return client, heygen_session_of(client)


async def test_peer_gone_stops_the_avatar(
    database: Database, tmp_path: Path, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    _, liveavatar = fakes
    limits = Limits(**{**NO_LIMITS.__dict__, "call": CallLimits(media_timeout_s=1.5)})
    runner, server = await start_server(avatar_settings(database, tmp_path, liveavatar, pipeline="loopback", limits=limits))
    try:
        # The browser's microphone goes silent for good and nothing says goodbye (a crashed tab, a lost network).
        client, sid = await live_avatar(server, http, source=PcmSourceTrack(sine(440, 1.0), end_when_done=True))
        await wait_stopped(liveavatar, database, sid)
        # The paid session stops as the call's tasks end, a moment before the call's end is recorded.
        await until(lambda: server.app[keys.CALLS].end_reason(uuid.UUID(client.session_id)) is not None, 10, "the call's end")
        assert server.app[keys.CALLS].end_reason(uuid.UUID(client.session_id)) == "peer_gone"
        await client.close()
    finally:
        await runner.cleanup()


async def test_max_call_duration_stops_the_avatar(
    database: Database, tmp_path: Path, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    _, liveavatar = fakes
    limits = Limits(**{**NO_LIMITS.__dict__, "call": CallLimits(max_call_seconds=4)})
    runner, server = await start_server(avatar_settings(database, tmp_path, liveavatar, pipeline="loopback", limits=limits))
    try:
        client, sid = await live_avatar(server, http)
        await wait_stopped(liveavatar, database, sid)
        # The paid session stops as the call's tasks end, a moment before the call's end is recorded.
        await until(lambda: server.app[keys.CALLS].end_reason(uuid.UUID(client.session_id)) is not None, 10, "the call's end")
        assert server.app[keys.CALLS].end_reason(uuid.UUID(client.session_id)) == "max_duration"
        await client.close()
    finally:
        await runner.cleanup()


async def test_server_shutdown_stops_the_avatar(
    database: Database, tmp_path: Path, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    _, liveavatar = fakes
    runner, server = await start_server(avatar_settings(database, tmp_path, liveavatar, pipeline="loopback"))
    client, sid = await live_avatar(server, http)
    await runner.cleanup()  # drain: the calls end, then the server goes
    await wait_stopped(liveavatar, database, sid)
    await client.close()


async def test_spent_avatar_quota_stops_the_paid_session_and_the_call_goes_on(
    server: RunningServer, database: Database, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    _, liveavatar = fakes
    user = f"quota-{uuid.uuid4().hex[:6]}"
    assert (await admin_set(http, server, user, {"avatar_video_seconds": 3})).status == 200
    client = RtcClient(server.base_url, server.token(user), source=PcmSourceTrack(sine(440, 60)), want_video=True, raw_luma=True)
    client.session_body = {"avatar": True}
    await client.connect(http)
    await client.wait_connected(15)
    sid = heygen_session_of(client)
    events, task = await follow(server, http, client)
    try:
        await until(lambda: bool(of(events, "avatar_stopped")), 20, "avatar_stopped")
        assert of(events, "avatar_stopped")[0]["reason"] == "quota_exhausted"
        await wait_stopped(liveavatar, database, sid)
        call = server.app[keys.CALLS].get(uuid.UUID(client.session_id))
        assert call is not None and call.state == "connected"
        assert call.avatar_relay is not None and call.avatar_relay.end_reason == "quota_exhausted"
    finally:
        await client.hangup(http)
        task.cancel()


async def test_realtime_socket_drop_falls_back_to_the_rendered_face(
    server: RunningServer, database: Database, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    _, liveavatar = fakes
    client, sid = await live_avatar(server, http)
    events, task = await follow(server, http, client)
    try:
        await liveavatar.drop_websocket(sid)
        await until(lambda: bool(of(events, "avatar_fallback")), 10, "the fallback")
        errors = of(events, "error")
        assert errors and errors[0]["code"] == "avatar_failed"
        await wait_stopped(liveavatar, database, sid)
        assert await stored_status(database, sid) in ("failed", "stopped")
        # The rendered face now: frames keep coming, at its size, without the avatar's pattern.
        count = len(client.video_frames)
        await until(lambda: len(client.video_frames) >= count + 10, 10, "rendered frames")
        assert client.video_frames[-1].shape == (240, 320)
        call = server.app[keys.CALLS].get(uuid.UUID(client.session_id))
        assert call is not None and call.state == "connected" and call.audio_out.relay is None
    finally:
        await client.hangup(http)
        task.cancel()


async def test_room_disconnect_falls_back_and_stops(
    server: RunningServer, database: Database, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    livekit, liveavatar = fakes
    client, sid = await live_avatar(server, http)
    events, task = await follow(server, http, client)
    try:
        await livekit.rooms[sid].disconnect_all("the room went away")
        await until(lambda: bool(of(events, "avatar_fallback")), 10, "the fallback")
        assert of(events, "error")[0]["code"] == "avatar_failed"
        await wait_stopped(liveavatar, database, sid)
        assert server.app[keys.CALLS].get(uuid.UUID(client.session_id)).state == "connected"
    finally:
        await client.hangup(http)
        task.cancel()


async def test_start_failure_falls_back_and_stops(
    server: RunningServer, database: Database, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    _, liveavatar = fakes
    liveavatar.fail_next("start", status=503)
    client = await avatar_client(server, http)
    sid = heygen_session_of(client)
    events, task = await follow(server, http, client)
    try:
        await until(lambda: bool(of(events, "avatar_fallback")) or bool(stops_of(liveavatar, sid)), 15, "the fallback")
        await wait_stopped(liveavatar, database, sid)
        await until(lambda: len(client.video_frames) >= 5, 10, "rendered frames")
        assert client.video_frames[-1].shape == (240, 320)
        assert server.app[keys.CALLS].get(uuid.UUID(client.session_id)).state == "connected"
    finally:
        await client.hangup(http)
        task.cancel()


async def test_token_refused_gives_the_rendered_face_and_an_error(
    server: RunningServer, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    _, liveavatar = fakes
    starts_before = len(liveavatar.calls_of("start"))
    liveavatar.fail_next("token", status=401)
    client = RtcClient(server.base_url, server.token(), want_video=True, raw_luma=True)
    client.session_body = {"avatar": True}
    await client.create_session(http)
    assert client.session["avatar"]["status"] == "failed"  # type: ignore[index]
    events, task = await follow(server, http, client)
    try:
        await client.connect(http)
        await client.wait_connected(15)
        await until(lambda: bool(of(events, "error")), 10, "the error event")
        assert of(events, "error")[0]["code"] == "avatar_failed"
        await until(lambda: len(client.video_frames) >= 5, 10, "rendered frames")
        assert client.video_frames[-1].shape == (240, 320)
        assert len(liveavatar.calls_of("start")) == starts_before
    finally:
        await client.hangup(http)
        task.cancel()


async def test_no_video_offered_never_starts_the_paid_session(
    server: RunningServer, database: Database, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    _, liveavatar = fakes
    client = RtcClient(server.base_url, server.token(), want_video=False)
    client.session_body = {"avatar": True}
    await client.connect(http)
    await client.wait_connected(15)
    sid = heygen_session_of(client)
    try:
        await wait_stopped(liveavatar, database, sid)
        assert not [c for c in liveavatar.calls_of("start") if c.get("session_id") == sid]
    finally:
        await client.hangup(http)


async def test_max_session_duration_ends_the_avatar_and_the_call_goes_on(
    database: Database, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    livekit, liveavatar = await start_fakes()
    liveavatar.max_session_duration_s = 3
    runner, server = await start_server(avatar_settings(database, tmp_path, liveavatar, pipeline="loopback"))
    try:
        client, sid = await live_avatar(server, http)
        events, task = await follow(server, http, client)
        await until(lambda: bool(of(events, "avatar_stopped")), 10, "avatar_stopped")
        assert of(events, "avatar_stopped")[0]["reason"] == "max_session_duration"
        await wait_stopped(liveavatar, database, sid)
        call = server.app[keys.CALLS].get(uuid.UUID(client.session_id))
        assert call is not None and call.state == "connected"
        await client.hangup(http)
        task.cancel()
    finally:
        await runner.cleanup()
        await liveavatar.close()
        await livekit.aclose()


async def test_without_fallback_a_failed_avatar_stops_the_video(
    database: Database, tmp_path: Path, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    _, liveavatar = fakes
    runner, server = await start_server(avatar_settings(database, tmp_path, liveavatar, pipeline="loopback", avatar_fallback="none"))
    try:
        client, sid = await live_avatar(server, http)
        events, task = await follow(server, http, client)
        await liveavatar.drop_websocket(sid)
        await until(lambda: bool(of(events, "avatar_stopped")), 10, "avatar_stopped")
        assert of(events, "error")[0]["code"] == "avatar_failed"
        await wait_stopped(liveavatar, database, sid)
        count = len(client.video_frames)
        await asyncio.sleep(1.0)
        assert len(client.video_frames) - count <= 2
        assert all(frame.shape == (512, 512) for frame in client.video_frames)  # never the rendered face
        await client.hangup(http)
        task.cancel()
    finally:
        await runner.cleanup()
