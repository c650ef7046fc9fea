"""Quota per usage type, and a call never running without its guard."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import numpy as np
import pytest

from signaling import keys
from storage.database import Database
from tests.conftest import server_settings, start_server
from tests.probes import udp_sockets
from tests.rtc_client import PcmSourceTrack, RtcClient, sine
from tests.test_call_loopback import dominant_frequency
from tests.test_metering import admin_set

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_spent_avatar_quota_costs_the_avatar_not_the_call(
    database: Database, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    runner, server = await start_server(server_settings(database, tmp_path, quota_chunk_seconds=1.0))
    user = f"no-avatar-{uuid.uuid4().hex[:6]}"
    try:
        assert (await admin_set(http, server, user, {"avatar_video_seconds": 2})).status == 200
        client = RtcClient(server.base_url, server.token(user), source=PcmSourceTrack(sine(440, 60)), want_video=True)
        await client.create_session(http)
        ws = await http.ws_connect(f"{server.base_url}/api/v1/sessions/{client.session_id}/events?access_token={client.token}")
        await client.connect(http)
        events: list[dict[str, object]] = []
        async with asyncio.timeout(15):
            async for message in ws:
                event = json.loads(message.data)
                events.append(event)
                if event["type"] == "avatar_stopped":
                    break
        assert events[-1]["reason"] == "quota_exhausted"
        assert {"type": "quota_exhausted", "usage_type": "avatar_video_seconds"}.items() <= next(
            e for e in events if e["type"] == "quota_exhausted"
        ).items()
        # The voice goes on: the call is still connected and still echoes.
        await asyncio.sleep(1.5)
        call = server.app[keys.CALLS].get(uuid.UUID(client.session_id))
        assert call is not None and call.state == "connected"
        frames = len(client.video_frames)
        client.recorder.reset()
        await asyncio.sleep(1.0)
        assert abs(dominant_frequency(client.recorder.audio()) - 440) < 10
        assert len(client.video_frames) - frames <= 2  # no more avatar video
        await ws.close()
        await client.hangup(http)
        # The avatar's time stayed within a chunk of its limit; the same user can still talk.
        for _ in range(50):
            row = await database.pool.fetchrow(
                "select used, reserved from usage_ledger where user_id = $1 and usage_type = 'avatar_video_seconds'", user
            )
            if row["reserved"] == 0:
                break
            await asyncio.sleep(0.1)
        assert row["used"] <= 3_000_000 and row["reserved"] == 0
        voice_only = RtcClient(server.base_url, server.token(user))
        await voice_only.connect(http)
        await voice_only.wait_connected()
        await voice_only.hangup(http)
    finally:
        await runner.cleanup()


async def test_session_is_refused_only_for_types_it_needs(
    database: Database, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    runner, server = await start_server(server_settings(database, tmp_path))
    user = f"types-{uuid.uuid4().hex[:6]}"
    headers = server.auth(user)
    try:
        assert (await admin_set(http, server, user, {"avatar_video_seconds": 0, "stt_seconds": 0})).status == 200
        async with http.post(f"{server.base_url}/api/v1/sessions", headers=headers) as resp:
            assert resp.status == 201  # a loopback call needs neither the avatar nor speech-to-text
        assert (await admin_set(http, server, user, {"speech_audio_seconds": 0})).status == 200
        async with http.post(f"{server.base_url}/api/v1/sessions", headers=headers) as resp:
            assert resp.status == 403
            body = await resp.json()
            assert body["error"]["code"] == "quota_exceeded" and "speech_audio_seconds" in body["error"]["message"]
            assert "avatar" not in body["error"]["message"]
    finally:
        await runner.cleanup()


async def test_database_failure_while_recording_the_offer_leaves_no_call(
    database: Database, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    runner, server = await start_server(server_settings(database, tmp_path))
    registry = server.app[keys.CALLS]
    sessions = registry.accounting.sessions
    real = sessions.mark_connecting

    async def failing(*args: object) -> bool:
        raise asyncpg.InterfaceError("connection lost")

    client = RtcClient(server.base_url, server.token())
    udp_before = udp_sockets()
    try:
        await client.create_session(http)
        sessions.mark_connecting = failing  # type: ignore[method-assign]
        with pytest.raises(AssertionError, match="database_unavailable"):
            await client.connect(http)
        assert len(registry) == 0
        for _ in range(50):
            if udp_sockets() <= udp_before + 2:  # the client's own sockets may still be open
                break
            await asyncio.sleep(0.1)
        await client.close()
        for _ in range(50):
            if udp_sockets() <= udp_before:
                break
            await asyncio.sleep(0.1)
        assert udp_sockets() <= udp_before
    finally:
        sessions.mark_connecting = real  # type: ignore[method-assign]
        await runner.cleanup()


class _BrokenPolicy:
    def chunk(self, usage_type: str) -> int:
        raise RuntimeError("the guard cannot work")


async def test_call_ends_when_its_quota_guard_dies(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    runner, server = await start_server(server_settings(database, tmp_path))
    registry = server.app[keys.CALLS]
    registry.accounting.policy = _BrokenPolicy()  # type: ignore[assignment]
    client = RtcClient(server.base_url, server.token(), source=PcmSourceTrack(np.zeros(48_000 * 10, np.int16)))
    try:
        await client.connect(http, trickle=False)  # the call may end before trickled candidates arrive
        for _ in range(100):
            if len(registry) == 0:
                break
            await asyncio.sleep(0.05)
        assert len(registry) == 0
        await asyncio.sleep(0.3)
        row = await database.pool.fetchrow("select status, end_reason from user_sessions where id = $1", uuid.UUID(client.session_id))
        assert (row["status"], row["end_reason"]) == ("ended", "quota_guard_failed")
    finally:
        await client.close()
        await runner.cleanup()
