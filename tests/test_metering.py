"""Exact metering over real WebRTC into a real Postgres, and quotas enforced while calls run."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import numpy as np
import pytest

from signaling import keys
from storage.database import Database
from tests.conftest import RunningServer, server_settings, start_server
from tests.rtc_client import PcmSourceTrack, RtcClient, sine
from tests.rtp_faults import RtpCounts, filter_outgoing_rtp, jumping_timestamps, opus_dtx, random_loss, rewrite_outgoing_rtp

pytestmark = pytest.mark.asyncio(loop_scope="session")

TRUTH_S = 7.340  # 367 packets of 20 ms
HOUR = 48_000 * 3600  # in RTP clock units


async def stream_exactly(  # type: ignore[no-untyped-def]
    http: aiohttp.ClientSession, server: RunningServer, audio: np.ndarray, fault=None, rewrite=None
) -> tuple[RtcClient, RtpCounts]:
    client = RtcClient(server.base_url, server.token(), source=PcmSourceTrack(audio, end_when_done=True))
    await client.create_session(http)
    await client.connect(http)
    if fault is not None:
        counts = filter_outgoing_rtp(client.pc, fault)
    else:
        counts = rewrite_outgoing_rtp(client.pc, rewrite or (lambda data: data))
    await client.wait_connected()
    while not client.source.done:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    await client.hangup(http)
    return client, counts


async def stored_meters(database: Database, session_id: str) -> dict[str, int]:
    rows = await database.pool.fetch("select meter, amount from session_meters where session_id = $1", uuid.UUID(session_id))
    return {r["meter"]: r["amount"] for r in rows}


@pytest.mark.parametrize("fault", ["clean", "loss", "dtx"])
async def test_known_durations_are_metered_within_20ms(
    loopback_server: RunningServer, database: Database, http: aiohttp.ClientSession, fault: str
) -> None:
    if fault == "dtx":
        audio = np.concatenate([sine(440, 2.0), np.zeros(int(48_000 * 3.34), np.int16), sine(440, 2.0)])
        client, _ = await stream_exactly(http, loopback_server, audio, opus_dtx())
    else:
        client, _ = await stream_exactly(http, loopback_server, sine(440, TRUTH_S), random_loss(0.05) if fault == "loss" else None)
    assert client.source.frames_sent == 367
    stored = await stored_meters(database, client.session_id)
    assert abs(stored["mic"] / 1e6 - TRUTH_S) <= 0.020, stored
    # Loopback echoes what arrived (packets the client dropped never arrived): speech out is what was sent back.
    assert 0 < stored["speech"] <= stored["mic"] + 100_000
    assert stored["connected"] >= 7_000_000
    async with http.get(f"{loopback_server.base_url}/api/v1/sessions/{client.session_id}/usage", headers=client.headers) as resp:
        body = await resp.json()
    mic = next(t for t in body["tracks"] if t["track"] == "mic")
    seconds = stored["mic"] // 1000 / 1000
    assert mic == {
        "track": "mic", "kind": "audio", "direction": "inbound", "media_us": stored["mic"], "seconds": seconds, "streamed_seconds": seconds
    }
    # The user's month holds exactly what the session stored.
    ledger = await database.pool.fetchval(
        "select used from usage_ledger where user_id = (select user_id from user_sessions where id = $1) and usage_type = 'mic_audio_seconds'",
        uuid.UUID(client.session_id),
    )
    assert ledger == stored["mic"]


async def test_forged_timestamp_jumps_are_not_billed(
    loopback_server: RunningServer, database: Database, http: aiohttp.ClientSession
) -> None:
    # At 1 s one packet 12 hours ahead; from 3 s on an hour behind; from 5 s on 30 s ahead of that.
    jumps = jumping_timestamps({50: 12 * HOUR, 51: 0, 150: -HOUR, 250: 30 * 48_000 - HOUR})
    client, counts = await stream_exactly(http, loopback_server, sine(440, TRUTH_S), rewrite=jumps)
    assert counts.sent == client.source.frames_sent == 367 and counts.last_sent_at is not None
    # The client's audio began when its source started playing; its last packet left at last_sent_at.
    streamed_s = counts.last_sent_at - client.source._start + 0.020
    stored = await stored_meters(database, client.session_id)
    assert 0 < stored["mic"] / 1e6 <= streamed_s + 0.020, (stored, streamed_s)
    # Nothing vanished either: every packet counts for the 20 ms it carried.
    assert abs(stored["mic"] / 1e6 - TRUTH_S) <= 0.020, stored


async def test_speech_track_reports_what_it_streamed(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    # One second of tone, then the client stops sending: the echo stops, the speech track's frames go on.
    source = PcmSourceTrack(sine(440, 1.0), end_when_done=True)
    client = RtcClient(loopback_server.base_url, loopback_server.token(), source=source)
    await client.create_session(http)
    url = f"{loopback_server.base_url}/api/v1/sessions/{client.session_id}/usage"
    try:
        await client.connect(http)
        await client.wait_connected()
        await asyncio.sleep(3.0)
        async with http.get(url, headers=client.headers) as resp:
            live = await resp.json()
    finally:
        await client.hangup(http)
    async with http.get(url, headers=client.headers) as resp:
        ended = await resp.json()
    for body in (live, ended):
        tracks = {t["track"]: t for t in body["tracks"]}
        speech, mic = tracks["speech"], tracks["mic"]
        assert 0.5 <= speech["seconds"] <= 1.2, body
        assert speech["streamed_seconds"] >= speech["seconds"] + 1.5, body
        assert abs(speech["streamed_seconds"] - body["connected_seconds"]) <= 0.3, body
        assert mic["streamed_seconds"] == mic["seconds"] > 0.9, body


async def test_usage_events_and_live_usage_while_the_call_runs(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    client = RtcClient(loopback_server.base_url, loopback_server.token(), source=PcmSourceTrack(sine(300, 30)))
    await client.create_session(http)
    ws = await http.ws_connect(f"{loopback_server.base_url}/api/v1/sessions/{client.session_id}/events?access_token={client.token}")
    try:
        await client.connect(http)
        await client.wait_connected()
        usage_events = []
        async with asyncio.timeout(8):
            async for message in ws:
                event = json.loads(message.data)
                if event["type"] == "usage":
                    usage_events.append(event)
                    if len(usage_events) == 3:
                        break
        seconds = [next(t["seconds"] for t in e["tracks"] if t["track"] == "mic") for e in usage_events]
        assert seconds == sorted(seconds) and seconds[-1] > seconds[0]
        assert "mic_audio_seconds" in usage_events[-1]["quota"]
        async with http.get(f"{loopback_server.base_url}/api/v1/sessions/{client.session_id}/usage", headers=client.headers) as resp:
            live = await resp.json()
        assert live["connected_seconds"] > 0 and {t["track"] for t in live["tracks"]} == {"mic", "speech"}
    finally:
        await ws.close()
        await client.hangup(http)


async def admin_set(http: aiohttp.ClientSession, server: RunningServer, user: str, limits: dict[str, object]) -> aiohttp.ClientResponse:
    admin = {"Authorization": f"Bearer {server.tokens.issue('admin-1', admin=True)}"}
    return await http.put(f"{server.base_url}/api/v1/admin/users/{user}/quota", json={"limits": limits}, headers=admin)


async def test_quota_api_and_refusal_before_a_call(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    user = f"quota-{uuid.uuid4().hex[:6]}"
    headers = loopback_server.auth(user)
    async with http.get(f"{loopback_server.base_url}/api/v1/usage", headers=headers) as resp:
        body = await resp.json()
        assert body["usage"]["mic_audio_seconds"]["limit"] == 3600 and body["usage"]["mic_audio_seconds"]["used"] == 0
    # Only admins set limits.
    async with http.put(f"{loopback_server.base_url}/api/v1/admin/users/{user}/quota", json={"limits": {"mic_audio_seconds": 1}}, headers=headers) as resp:
        assert resp.status == 403
    resp = await admin_set(http, loopback_server, user, {"nonsense": 5})
    assert resp.status == 400
    resp = await admin_set(http, loopback_server, user, {"mic_audio_seconds": -1})
    assert resp.status == 400
    resp = await admin_set(http, loopback_server, user, {"mic_audio_seconds": 0, "agent_tokens": None})
    assert resp.status == 200
    assert (await resp.json())["limits"]["mic_audio_seconds"] == 0
    async with http.post(f"{loopback_server.base_url}/api/v1/sessions", headers=headers) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "quota_exceeded"
    resp = await admin_set(http, loopback_server, user, {"mic_audio_seconds": 60})
    async with http.post(f"{loopback_server.base_url}/api/v1/sessions", headers=headers) as resp:
        assert resp.status == 201


async def test_quota_runs_out_mid_call(database: Database, tmp_path, http: aiohttp.ClientSession) -> None:  # type: ignore[no-untyped-def]
    runner, server = await start_server(server_settings(database, tmp_path, quota_chunk_seconds=1.0))
    user = f"small-{uuid.uuid4().hex[:6]}"
    try:
        assert (await admin_set(http, server, user, {"mic_audio_seconds": 4})).status == 200
        client = RtcClient(server.base_url, server.token(user), source=PcmSourceTrack(sine(500, 60)))
        await client.create_session(http)
        ws = await http.ws_connect(f"{server.base_url}/api/v1/sessions/{client.session_id}/events?access_token={client.token}")
        await client.connect(http)
        events = []
        async with asyncio.timeout(20):
            async for message in ws:
                event = json.loads(message.data)
                events.append(event)
                if event["type"] == "state" and event["state"] == "ended":
                    break
        await client.close()
        assert events[-1]["reason"] == "quota_exhausted"
        warnings = {(e["usage_type"], e["level"]) for e in events if e["type"] == "quota_warning"}
        assert ("mic_audio_seconds", "80_percent") in warnings and ("mic_audio_seconds", "30_seconds") in warnings
        # The "ended" event comes first; the final flush and the release of what was unused follow.
        for _ in range(50):
            used, reserved = await database.pool.fetchrow(
                "select used, reserved from usage_ledger where user_id = $1 and usage_type = 'mic_audio_seconds'", user
            )
            if reserved == 0:
                break
            await asyncio.sleep(0.1)
        # Never more than one chunk beyond the limit, and nothing left reserved once the call ended.
        assert 3_500_000 <= used <= 4_000_000 + 1_000_000 and reserved == 0
    finally:
        await runner.cleanup()


async def test_chunks_grow_far_from_the_limit_and_stay_small_near_it(  # type: ignore[no-untyped-def]
    database: Database, tmp_path, http: aiohttp.ClientSession
) -> None:
    settings = server_settings(database, tmp_path, quota_chunk_seconds=1.0, quota_chunk_max_seconds=30.0)
    runner, server = await start_server(settings)
    far, near = f"far-{uuid.uuid4().hex[:6]}", f"near-{uuid.uuid4().hex[:6]}"
    clients = []
    try:
        for user, limit in ((far, 3600), (near, 8)):
            assert (await admin_set(http, server, user, {"mic_audio_seconds": limit})).status == 200
            client = RtcClient(server.base_url, server.token(user), source=PcmSourceTrack(sine(500, 60)))
            await client.create_session(http)
            await client.connect(http)
            clients.append(client)
        async def granted_and_used(session_id: str) -> tuple[int, int]:
            # One statement, one snapshot: a flush turns held into used in one transaction.
            row = await database.pool.fetchrow(
                """
                select q.reserved, coalesce(m.amount, 0) as used from quota_reservations q
                left join session_meters m on m.session_id = q.session_id and m.meter = 'mic'
                where q.session_id = $1 and q.usage_type = 'mic_audio_seconds'
                """,
                uuid.UUID(session_id),
            )
            return (row["reserved"] + row["used"], row["used"]) if row is not None else (0, 0)

        far_call, near_call = (client.session_id for client in clients)
        async with asyncio.timeout(20):
            while True:  # until both calls have 2 s of microphone flushed (well before the near one's 8 s)
                (far_granted, far_used), (near_granted, near_used) = [
                    await granted_and_used(session_id) for session_id in (far_call, near_call)
                ]
                if far_used >= 2_000_000 and near_used >= 2_000_000:
                    break
                await asyncio.sleep(0.1)
        # Far: the base chunk first (nothing known of the month), then a tenth of what is left, capped at 30 s.
        assert far_granted == 31_000_000
        # Near: a tenth of what is left is below the base, so 1 s at a time, a little ahead of what is used
        # (the live use it follows runs up to a flush, ~1 s, ahead of the flushed figure).
        assert near_used <= near_granted <= near_used + 3_000_000
    finally:
        for client in clients:
            await client.close()
        await runner.cleanup()


async def test_database_outage_loses_nothing(tmp_path, http: aiohttp.ClientSession) -> None:  # type: ignore[no-untyped-def]
    from storage.database import open_database
    from storage.embedded import EmbeddedPostgres

    own = EmbeddedPostgres(tmp_path / "pg")
    url = await own.start()
    db = await open_database(url, tmp_path / "unused")
    runner, server = await start_server(server_settings(db, tmp_path))
    try:
        client = RtcClient(server.base_url, server.token(), source=PcmSourceTrack(sine(440, 6.0), end_when_done=True))
        await client.create_session(http)
        await client.connect(http)
        await client.wait_connected()
        call = server.app[keys.CALLS].get(uuid.UUID(client.session_id))
        await asyncio.sleep(1.0)
        await own.stop()  # Postgres goes away mid-call
        frames_before = call.audio_out.frames_sent
        while not client.source.done:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        # Media kept flowing without the database.
        assert call.audio_out.frames_sent - frames_before > 150
        # The browser hangs up while the database is away: the server answers 503, the peer goes,
        # and the end is recorded once Postgres is back.
        async with http.delete(f"{server.base_url}/api/v1/sessions/{client.session_id}", headers=client.headers) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "database_unavailable"
        await client.close()
        for _ in range(100):
            if call.state == "ended":
                break
            await asyncio.sleep(0.1)
        assert server.app[keys.CALLS].accounting.flusher.pending_ends == 1
        await own.start()  # Postgres comes back
        for _ in range(100):
            if server.app[keys.CALLS].accounting.flusher.pending_ends == 0:
                break
            await asyncio.sleep(0.1)
        row = await db.pool.fetchrow(
            "select s.status, s.end_reason, m.amount from user_sessions s join session_meters m on m.session_id = s.id and m.meter = 'mic' where s.id = $1",
            uuid.UUID(client.session_id),
        )
        assert row["status"] == "ended" and row["end_reason"] in ("peer_closed", "ice_failed")
        assert abs(row["amount"] / 1e6 - 6.0) <= 0.020
    finally:
        await runner.cleanup()
        await db.close()
        await own.stop()
