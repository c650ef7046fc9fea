"""A real aiortc client against the running server: audio goes out, comes back, and the call ends cleanly."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import numpy as np
import psutil
import pytest

from signaling import keys
from tests.conftest import RunningServer, server_settings, start_server
from tests.probes import udp_sockets
from tests.rtc_client import RATE, RtcClient, sine

pytestmark = pytest.mark.asyncio(loop_scope="session")


def dominant_frequency(samples: np.ndarray) -> float:
    window = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(window))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[int(np.argmax(spectrum[1:])) + 1])


async def collect_events(ws: aiohttp.ClientWebSocketResponse, into: list[dict[str, object]]) -> None:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            into.append(json.loads(message.data))


async def test_echo_round_trip_events_and_clean_teardown(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    udp_before = udp_sockets()
    client = RtcClient(loopback_server.base_url, loopback_server.token("echo-user"))
    session_id = await client.create_session(http)
    ws = await http.ws_connect(
        f"{loopback_server.base_url}/api/v1/sessions/{session_id}/events?access_token={client.token}"
    )
    events: list[dict[str, object]] = []
    reader = asyncio.ensure_future(collect_events(ws, events))

    client.source.play(sine(440, 30))
    await client.connect(http, trickle=True)
    await client.wait_connected()
    await asyncio.sleep(1.5)
    client.recorder.reset()
    await asyncio.sleep(1.0)
    heard = client.recorder.audio()

    # About one second of audio came back, and it is our tone.
    assert abs(len(heard) - RATE) < RATE * 0.15, len(heard)
    assert np.sqrt(np.mean(heard.astype(np.float64) ** 2)) > 1000
    assert abs(dominant_frequency(heard) - 440) < 10

    registry = loopback_server.app[keys.CALLS]
    call = registry.get(uuid.UUID(session_id))
    assert call is not None and call.state == "connected"
    # Outbound frames are paced at 50 a second.
    sent_before = call.audio_out.frames_sent
    await asyncio.sleep(1.0)
    assert 45 <= call.audio_out.frames_sent - sent_before <= 55

    async with http.get(f"{loopback_server.base_url}/api/v1/sessions/{session_id}", headers=client.headers) as resp:
        body = await resp.json()
        assert body["status"] == "connected" and body["connected_at"]

    await client.hangup(http)
    await asyncio.wait_for(reader, 5)  # the server closes the socket after "ended"
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states[0] == "new" and "connecting" in states and "connected" in states and states[-1] == "ended"
    assert events[-1]["reason"] == "hangup"

    # Nothing of the call is left behind: no registry entry, no task, no socket.
    assert registry.get(uuid.UUID(session_id)) is None
    assert call.live_tasks == 0
    leftover = [t for t in asyncio.all_tasks() if session_id in t.get_name()]
    assert leftover == []
    for _ in range(50):
        if udp_sockets() <= udp_before:
            break
        await asyncio.sleep(0.1)
    assert udp_sockets() <= udp_before


async def test_offer_with_candidates_inline(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    client = RtcClient(loopback_server.base_url, loopback_server.token())
    client.source.play(sine(660, 10))
    try:
        await client.connect(http, trickle=False)
        await client.wait_connected()
        await asyncio.sleep(1.0)
        client.recorder.reset()
        await asyncio.sleep(0.6)
        assert abs(dominant_frequency(client.recorder.audio()) - 660) < 12
    finally:
        await client.hangup(http)


async def test_server_shutdown_ends_every_call(database, tmp_path, http: aiohttp.ClientSession) -> None:  # type: ignore[no-untyped-def]
    runner, server = await start_server(server_settings(database, tmp_path))
    clients = [RtcClient(server.base_url, server.token()) for _ in range(2)]
    try:
        for client in clients:
            await client.connect(http)
        for client in clients:
            await client.wait_connected()
        threads_with_calls = len(psutil.Process().threads())
    finally:
        await runner.cleanup()
    for client in clients:
        row = await database.pool.fetchrow(
            "select status, end_reason from user_sessions where id = $1", uuid.UUID(client.session_id)
        )
        assert (row["status"], row["end_reason"]) == ("ended", "server_shutdown")
        await client.close()
    assert len(server.app[keys.CALLS]) == 0
    # Threads are pooled, not per call: none were added for these calls that outlive them.
    assert len(psutil.Process().threads()) <= threads_with_calls


async def test_peer_that_vanishes_is_torn_down(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    """The browser tab dies without a DELETE: the call ends on its own."""
    client = RtcClient(loopback_server.base_url, loopback_server.token())
    await client.connect(http)
    await client.wait_connected()
    call = loopback_server.app[keys.CALLS].get(uuid.UUID(client.session_id))
    assert call is not None
    await client.close()  # DTLS close_notify, no HTTP hang-up
    for _ in range(100):
        if call.state == "ended":
            break
        await asyncio.sleep(0.1)
    assert call.state == "ended", call.state
    assert call.end_reason in ("peer_closed", "ice_failed", "ice_disconnected")
