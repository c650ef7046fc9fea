"""The rendered avatar over real WebRTC: its mouth follows the speech sent, and every second of it is metered."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import numpy as np
import pytest

from storage.database import Database
from tests.conftest import RunningServer
from tests.rtc_client import PcmSourceTrack, RtcClient, sine
from tests.speech import utterance, with_silence

pytestmark = pytest.mark.asyncio(loop_scope="session")


def lower_half(frame: np.ndarray) -> np.ndarray:
    return frame[frame.shape[0] // 2 :].astype(np.int16)


async def wait_ended_in_db(database: Database, session_id: str) -> None:
    for _ in range(100):
        row = await database.pool.fetchrow(
            "select s.avatar_status from user_sessions s where s.id = $1", uuid.UUID(session_id)
        )
        if row["avatar_status"] == "ended":
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the avatar session was never ended")


async def test_mouth_follows_sent_speech_and_video_is_metered(
    loopback_server: RunningServer, database: Database, http: aiohttp.ClientSession
) -> None:
    # Silence, then a tone the loopback sends back (the "speech"), then silence again.
    audio = np.concatenate([np.zeros(48_000 * 2, np.int16), sine(220, 2.0, amplitude=12000), np.zeros(48_000 * 2, np.int16)])
    client = RtcClient(loopback_server.base_url, loopback_server.token(), source=PcmSourceTrack(audio), want_video=True)
    await client.connect(http)
    await client.wait_connected()
    await asyncio.sleep(1.5)
    quiet_start = len(client.video_frames)
    await asyncio.sleep(0.5)  # silence still being echoed
    quiet = client.video_frames[quiet_start:]
    await asyncio.sleep(1.0)  # the tone is echoed now
    loud = client.video_frames[-5:]
    await asyncio.sleep(0.5)
    frames_before = len(client.video_frames)
    await asyncio.sleep(2.0)
    fps = (len(client.video_frames) - frames_before) / 2.0
    await client.hangup(http)

    assert 12 <= fps <= 16, fps
    still = np.abs(lower_half(quiet[-1]) - lower_half(quiet[0])).mean()
    moving = np.abs(lower_half(loud[-1]) - lower_half(quiet[-1])).mean()
    assert moving > 4 * max(still, 0.25), (moving, still)

    await wait_ended_in_db(database, client.session_id)
    sid = uuid.UUID(client.session_id)
    meters = {r["meter"]: r["amount"] for r in await database.pool.fetch("select meter, amount from session_meters where session_id = $1", sid)}
    assert abs(meters["avatar_video"] - meters["connected"]) < 300_000, meters
    avatar = await database.pool.fetchrow("select * from avatar_sessions where user_session_id = $1", sid)
    events = await database.pool.fetch(
        "select event_type, event_data, quota_cost from avatar_session_events where avatar_session_id = $1 order by timestamp, event_type = 'ended'",
        avatar["id"],
    )
    kinds = [e["event_type"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "ended" and "idle" in kinds
    stretches = sum(json.loads(e["event_data"])["duration_us"] if isinstance(e["event_data"], str) else e["event_data"]["duration_us"] for e in events)
    assert stretches == meters["avatar_video"]
    assert avatar["total_streaming_time"] == meters["avatar_video"] // 1_000_000
    assert avatar["quota_consumed"] == sum(e["quota_cost"] for e in events) and avatar["quota_consumed"] > 0
    assert avatar["session_status"] == "ended"
    ledger = await database.pool.fetchval(
        "select used from usage_ledger where user_id = $1 and usage_type = 'avatar_video_seconds'", client_user(client)
    )
    assert ledger == meters["avatar_video"]


def client_user(client: RtcClient) -> str:
    import jwt

    return jwt.decode(client.token, options={"verify_signature": False})["sub"]


async def test_avatar_listens_and_speaks_with_the_voice_loop(
    voice_server: RunningServer, database: Database, http: aiohttp.ClientSession
) -> None:
    client = RtcClient(voice_server.base_url, voice_server.token(), want_video=True)
    await client.create_session(http)
    ws = await http.ws_connect(f"{voice_server.base_url}/api/v1/sessions/{client.session_id}/events?access_token={client.token}")
    await client.connect(http)
    await client.wait_connected()
    client.source.play(with_silence(utterance("Hello, what time is it?")))
    async with asyncio.timeout(30):
        async for message in ws:
            event = json.loads(message.data)
            if event["type"] == "bot_speaking" and not event["speaking"]:
                break
    await ws.close()
    await client.hangup(http)
    await wait_ended_in_db(database, client.session_id)
    kinds = [
        r["event_type"]
        for r in await database.pool.fetch(
            """select e.event_type from avatar_session_events e join avatar_sessions a on a.id = e.avatar_session_id
               where a.user_session_id = $1 order by e.timestamp""",
            uuid.UUID(client.session_id),
        )
    ]
    assert {"started", "listening", "speaking", "ended"} <= set(kinds), kinds
