"""The call lifecycle against a running server: races, candidates before the offer, timeouts, bad frames."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from media.call import CallEnded
from media.call_limits import CallLimits
from media.loopback import LoopbackPipeline
from signaling import keys
from storage.database import Database
from storage.sessions import SessionRepository
from tests.conftest import RunningServer, server_settings, start_server
from tests.probes import udp_sockets, until
from tests.rtc_client import PcmSourceTrack, RtcClient, sine, strip_candidates
from tests.test_call_loopback import dominant_frequency

pytestmark = pytest.mark.asyncio(loop_scope="session")
ROOT = Path(__file__).resolve().parent.parent


async def session_row(database: Database, session_id: str) -> tuple[str, str | None]:
    row = await database.pool.fetchrow("select status, end_reason from user_sessions where id = $1", uuid.UUID(session_id))
    return row["status"], row["end_reason"]


async def make_offer(*, audio_tracks: int = 1) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for _ in range(audio_tracks):
        pc.addTrack(PcmSourceTrack())
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_offer_and_hangup_fired_together_leave_nothing(
    loopback_server: RunningServer, database: Database, http: aiohttp.ClientSession
) -> None:
    registry = loopback_server.app[keys.CALLS]
    udp_before = udp_sockets()
    tasks_before = {t.get_coro().__qualname__ for t in asyncio.all_tasks()}
    rng = random.Random(7)
    outcomes: list[int] = []
    sessions: list[uuid.UUID] = []
    for attempt in range(40):
        headers = loopback_server.auth(f"racer-{attempt % 4}")
        async with http.post(f"{loopback_server.base_url}/api/v1/sessions", headers=headers) as resp:
            assert resp.status == 201, await resp.text()
            session_id = (await resp.json())["session_id"]
        sessions.append(uuid.UUID(session_id))
        pc, sdp = await make_offer()
        base = f"{loopback_server.base_url}/api/v1/sessions/{session_id}"

        async def offer() -> int:
            async with http.post(f"{base}/offer", json={"sdp": sdp, "type": "offer"}, headers=headers) as resp:
                body = await resp.json()
                assert resp.status == 200 or body["error"]["code"] == "session_ended", body
                return resp.status

        async def hangup() -> None:
            await asyncio.sleep(rng.uniform(0, 0.03))
            async with http.delete(base, headers=headers) as resp:
                assert resp.status == 200

        status, _ = await asyncio.gather(offer(), hangup())
        outcomes.append(status)
        await pc.close()
        assert await until(lambda: registry.get(uuid.UUID(session_id)) is None, 5)
        assert await session_row(database, session_id) == ("ended", "hangup")
    # Both orders happened: the hang-up won some races (409) and came after the answer in others.
    assert 409 in outcomes and 200 in outcomes, outcomes
    assert not any(registry.is_waiting(s) or registry.get(s) for s in sessions)
    assert await until(lambda: udp_sockets() <= udp_before, 10), (udp_sockets(), udp_before)
    def new_tasks() -> list[str]:
        # Keep-alive HTTP connections of the test's own client session are not the server's leftovers.
        return [
            name
            for t in asyncio.all_tasks()
            if (name := t.get_coro().__qualname__) not in tasks_before and not name.startswith("RequestHandler.")
        ]

    assert await until(lambda: not new_tasks(), 10), new_tasks()


async def test_an_offer_whose_claim_lost_to_a_hang_up_is_told_the_session_ended(
    loopback_server: RunningServer, database: Database, http: aiohttp.ClientSession
) -> None:
    """The hang-up ended the session in Postgres after the offer was let in, before its claim (the race
    above, made certain): session_ended, as for any ended session, not invalid_state."""
    registry = loopback_server.app[keys.CALLS]
    async with http.post(f"{loopback_server.base_url}/api/v1/sessions", headers=loopback_server.auth("late-offer")) as resp:
        session_id = uuid.UUID((await resp.json())["session_id"])
    assert await SessionRepository(database.pool).end(session_id, "hangup")
    pc, sdp = await make_offer()
    try:
        with pytest.raises(CallEnded):
            await registry.start_call(session_id, "late-offer", datetime.now(timezone.utc) + timedelta(minutes=5), sdp)
    finally:
        await pc.close()
    assert registry.get(session_id) is None and not registry.is_waiting(session_id)


async def test_candidates_wait_for_the_offer_bounded(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    registry = loopback_server.app[keys.CALLS]
    client = RtcClient(loopback_server.base_url, loopback_server.token())
    session_id = await client.create_session(http)
    ice = f"{loopback_server.base_url}/api/v1/sessions/{session_id}/ice"
    too_long = "candidate:1 1 UDP 2130706431 10.0.0.1 40000 typ host " + "x" * 512
    async with http.post(ice, json={"candidate": too_long, "sdpMid": "0", "sdpMLineIndex": 0}, headers=client.headers) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_candidate"
    # Early candidates wait on the session, not in a Call: there is none before the offer.
    for port in range(64):
        line = f"candidate:{port} 1 UDP 2130706431 192.0.2.1 {40000 + port} typ host"
        async with http.post(ice, json={"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0}, headers=client.headers) as resp:
            assert resp.status == 204, await resp.text()
    assert registry.get(uuid.UUID(session_id)) is None and registry.is_waiting(uuid.UUID(session_id))
    line = "candidate:99 1 UDP 2130706431 192.0.2.1 50000 typ host"
    async with http.post(ice, json={"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0}, headers=client.headers) as resp:
        assert resp.status == 429 and (await resp.json())["error"]["code"] == "too_many_candidates"
    async with http.delete(f"{loopback_server.base_url}/api/v1/sessions/{session_id}", headers=client.headers) as resp:
        assert resp.status == 200
    assert not registry.is_waiting(uuid.UUID(session_id))


async def test_trickled_before_the_offer_then_connected(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    """A WebSocket and real candidates before the offer: the call takes them over and connects."""
    client = RtcClient(loopback_server.base_url, loopback_server.token())
    session_id = await client.create_session(http)
    base = f"{loopback_server.base_url}/api/v1/sessions/{session_id}"
    ws = await http.ws_connect(f"{base}/events?access_token={client.token}")
    first = json.loads((await ws.receive()).data)
    assert first["type"] == "state" and first["state"] == "new"
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(PcmSourceTrack(sine(500, 10)))
    await pc.setLocalDescription(await pc.createOffer())
    sdp, candidates = strip_candidates(pc.localDescription.sdp)
    for line, index in candidates:
        async with http.post(f"{base}/ice", json={"candidate": line, "sdpMid": str(index), "sdpMLineIndex": index}, headers=client.headers) as resp:
            assert resp.status == 204
    async with http.post(f"{base}/offer", json={"sdp": sdp, "type": "offer"}, headers=client.headers) as resp:
        assert resp.status == 200
        answer = await resp.json()
    from aiortc import RTCSessionDescription

    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    states = []
    async def read_states() -> None:
        async for message in ws:
            event = json.loads(message.data)
            if event["type"] == "state":
                states.append(event["state"])
                if event["state"] == "connected":
                    return
    await asyncio.wait_for(read_states(), 10)
    assert states == ["connecting", "connected"]
    async with http.delete(base, headers=client.headers) as resp:
        assert resp.status == 200
    await ws.close()
    await pc.close()


async def test_lobby_of_a_session_never_offered_is_freed(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    runner, server = await start_server(server_settings(database, tmp_path, session_ttl_seconds=1))
    try:
        client = RtcClient(server.base_url, server.token())
        session_id = await client.create_session(http)
        ws = await http.ws_connect(f"{server.base_url}/api/v1/sessions/{session_id}/events?access_token={client.token}")
        line = "candidate:1 1 UDP 2130706431 192.0.2.1 40000 typ host"
        async with http.post(f"{server.base_url}/api/v1/sessions/{session_id}/ice", json={"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0}, headers=client.headers) as resp:
            assert resp.status == 204
        assert server.app[keys.CALLS].lobbies == 1
        events = []
        async for message in ws:
            events.append(json.loads(message.data))
        assert events[-1]["state"] == "ended" and events[-1]["reason"] == "expired"
        assert server.app[keys.CALLS].lobbies == 0 and len(server.app[keys.CALLS]) == 0
    finally:
        await runner.cleanup()


async def test_more_than_one_audio_section_is_refused(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    client = RtcClient(loopback_server.base_url, loopback_server.token())
    session_id = await client.create_session(http)
    pc, sdp = await make_offer(audio_tracks=2)
    try:
        async with http.post(f"{loopback_server.base_url}/api/v1/sessions/{session_id}/offer", json={"sdp": sdp, "type": "offer"}, headers=client.headers) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_sdp"
    finally:
        await pc.close()
    assert loopback_server.app[keys.CALLS].get(uuid.UUID(session_id)) is None


async def test_connect_timeout_and_max_duration(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    settings = server_settings(database, tmp_path)
    limits = replace(settings.limits, call=CallLimits(connect_timeout_s=1.5, max_call_seconds=3.0))
    runner, server = await start_server(replace(settings, limits=limits))
    try:
        # An offer whose answer the client never applies: ICE never starts.
        never = RtcClient(server.base_url, server.token())
        session_id = await never.create_session(http)
        pc, sdp = await make_offer()
        async with http.post(f"{server.base_url}/api/v1/sessions/{session_id}/offer", json={"sdp": sdp, "type": "offer"}, headers=never.headers) as resp:
            assert resp.status == 200
        started = time.monotonic()
        assert await until(lambda: server.app[keys.CALLS].get(uuid.UUID(session_id)) is None, 5)
        assert 1.4 <= time.monotonic() - started <= 3.0
        await asyncio.sleep(0.2)
        assert await session_row(database, session_id) == ("ended", "connect_timeout")
        await pc.close()

        long_call = RtcClient(server.base_url, server.token())
        long_call.source.play(sine(440, 10))
        await long_call.connect(http)
        await long_call.wait_connected()
        assert await until(lambda: len(server.app[keys.CALLS]) == 0, 5)
        await asyncio.sleep(0.2)
        assert await session_row(database, long_call.session_id) == ("ended", "max_duration")
        await long_call.close()
    finally:
        await runner.cleanup()


_VANISHING_CLIENT = """
import asyncio, sys
import aiohttp
from tests.rtc_client import RtcClient, sine
async def main():
    async with aiohttp.ClientSession() as http:
        client = RtcClient(sys.argv[1], sys.argv[2])
        client.source.play(sine(440, 60))
        await client.connect(http)
        await client.wait_connected()
        print(client.session_id, flush=True)
        await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_client_that_vanishes_ends_peer_gone(database: Database, tmp_path: Path) -> None:
    settings = server_settings(database, tmp_path)
    media_timeout = 2.0
    runner, server = await start_server(replace(settings, limits=replace(settings.limits, call=CallLimits(media_timeout_s=media_timeout))))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _VANISHING_CLIENT, server.base_url, server.token(), cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        session_id = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        registry = server.app[keys.CALLS]
        assert await until(lambda: registry.get(uuid.UUID(session_id)) is not None and registry.get(uuid.UUID(session_id)).state == "connected", 5)
        await asyncio.sleep(1.0)
        proc.kill()  # the tab dies: no DELETE, no DTLS close, nothing
        killed = time.monotonic()
        assert await until(lambda: registry.get(uuid.UUID(session_id)) is None, media_timeout + 2)
        assert time.monotonic() - killed <= media_timeout + 2
        await asyncio.sleep(0.2)
        assert await session_row(database, session_id) == ("ended", "peer_gone")
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await runner.cleanup()


class _FlakyPipeline(LoopbackPipeline):
    """Echoes, but every fifth frame fails the way a bad decode would."""

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self.frames = 0

    def on_audio_samples(self, samples: np.ndarray) -> None:
        self.frames += 1
        if self.frames % 5 == 0:
            raise ValueError("a frame this pipeline cannot use")
        super().on_audio_samples(samples)


async def test_a_frame_that_fails_is_skipped_and_the_call_keeps_listening(
    database: Database, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    runner, server = await start_server(server_settings(database, tmp_path))
    server.app[keys.CALLS].pipeline_factory = _FlakyPipeline
    client = RtcClient(server.base_url, server.token())
    client.source.play(sine(440, 20))
    try:
        await client.connect(http)
        await client.wait_connected()
        await asyncio.sleep(2.0)
        call = server.app[keys.CALLS].get(uuid.UUID(client.session_id))
        assert call is not None and call.frames_failed >= 10
        client.recorder.reset()
        await asyncio.sleep(1.0)
        heard = client.recorder.audio()
        assert abs(dominant_frequency(heard) - 440) < 10
        assert call.state == "connected"
    finally:
        await client.close()
        await runner.cleanup()
