"""A call with the LiveAvatar: the fake service's avatar, in a real LiveKit room the server joins, reaches
the browser through our server; the reply audio goes to the avatar and comes back in sync with its video."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from signaling import keys
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
    sound_ms,
    stops_of,
    until,
    until_async,
)
from tests.speech import utterance, with_silence

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def voice_avatar_server(
    database: Database, tmp_path_factory: pytest.TempPathFactory, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar]
) -> AsyncIterator[RunningServer]:
    settings = avatar_settings(database, tmp_path_factory.mktemp("avatar"), fakes[1], pipeline="voice")
    runner, server = await start_server(settings)
    yield server
    await runner.cleanup()


class EventLog:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []
        self.task: asyncio.Task[None] | None = None

    async def follow(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(message.data))

    def of(self, kind: str) -> list[dict[str, object]]:
        return [e for e in self.events if e.get("type") == kind]


async def test_the_avatar_reaches_the_browser_through_us_and_speaks_our_reply(
    voice_avatar_server: RunningServer,
    fakes: tuple[FakeLiveKitServer, FakeLiveAvatar],
    database: Database,
    http: aiohttp.ClientSession,
) -> None:
    livekit, liveavatar = fakes
    server = voice_avatar_server
    client = await avatar_client(server, http)
    log = EventLog()
    ws = await events_socket(server, http, client)
    log.task = asyncio.ensure_future(log.follow(ws))
    try:
        sid = heygen_session_of(client)
        # Token, start, and our server in the room as the session's client; the browser never is.
        await until(lambda: len(relayed_frames(client)) >= 15, 20, "the avatar's frames at the client")
        assert [c["session_id"] for c in liveavatar.calls_of("start")] .count(sid) == 1
        room = livekit.rooms[sid]
        assert any(identity.startswith("client-") for identity in room.present)
        frames = relayed_frames(client)
        indices = [index for index, _ in frames]
        assert indices == sorted(indices) and len(set(indices)) == len(indices), indices
        # Pixel by pixel: each decoded frame is the very frame the avatar published (VP8 twice over).
        assert max(error for _, error in frames) < 12, frames
        assert client.video_frames[-1].shape == (512, 512)
        assert log.of("avatar_started")

        # A typed turn: the reply is synthesised, sent to the avatar, and heard from the avatar's audio.
        client.recorder.reset()
        async with http.post(
            f"{server.base_url}/api/v1/sessions/{client.session_id}/messages", json={"text": "hello there"}, headers=client.headers
        ) as resp:
            assert resp.status == 200, await resp.text()
            reply = (await resp.json())["reply"]
        assert reply
        await until(lambda: bool(liveavatar.spoken(sid)), 10, "agent.speak at the avatar")
        await until(lambda: sound_ms(client.recorder.audio()) > 300, 10, "the avatar's voice at the client")
        await until(lambda: bool(log.of("bot_speaking")) and log.of("bot_speaking")[-1]["speaking"] is False, 20, "the reply to end")
        spoken_ms = sum(len(audio) for audio in liveavatar.spoken(sid).values()) * 1000 // 48_000
        heard_ms = sound_ms(client.recorder.audio())
        # One voice, not two: what the browser heard is the avatar's audio (our TTS never hit the track).
        call = server.app[keys.CALLS].get(uuid.UUID(client.session_id))
        assert call is not None and call.audio_out.queue.sent_total == 0
        assert call.avatar_relay is not None and call.avatar_relay.audio.samples_in > 0
        assert 0.5 * spoken_ms < heard_ms < 1.3 * spoken_ms + 200, (spoken_ms, heard_ms)
        speaks = [c for c in liveavatar.calls_of("speak") if c["session_id"] == sid and not c["dropped"]]
        assert speaks and all(len(c["audio"]) <= 48_000 + 2 for c in speaks)  # ~1 s chunks of 24 kHz PCM16
        assert len({c["event_id"] for c in speaks}) == 1  # one utterance, one event_id

        # Metered from the relay's own timestamps, and billed as avatar video.
        usage = call.usage_snapshot()
        by_name = {s.meter: s.amount for s in usage}
        assert by_name["avatar_relay_video"] > 0 and by_name["avatar_relay_audio"] > 0
        assert by_name["avatar_video"] > 0

        # Tokens at rest: nothing HeyGen gave us is readable in the database.
        heygen_token = liveavatar.sessions[sid].session_token
        rows = await database.pool.fetch(
            "select row_to_json(a)::text as r from avatar_sessions a where heygen_session_id = $1", sid
        )
        assert rows and all(heygen_token not in row["r"] for row in rows)
        assert all(heygen_token[:12] not in row["r"] for row in rows)
    finally:
        await client.hangup(http)
        await ws.close()
        log.task.cancel()
    # Hanging up stops the paid session, and the avatar's rows close with durations.
    await until(lambda: bool(stops_of(liveavatar, sid)), 10, "stop at the avatar")
    row = await database.pool.fetchrow(
        "select a.id, a.session_status, s.avatar_status from avatar_sessions a join user_sessions s on s.id = a.user_session_id"
        " where a.heygen_session_id = $1",
        sid,
    )
    assert row["session_status"] in ("ended", "stopped") and row["avatar_status"] == "ended", dict(row)

    async def events_written() -> bool:
        kinds = await database.pool.fetch(
            "select event_type from avatar_session_events where avatar_session_id = $1 order by timestamp", row["id"]
        )
        return "ended" in [k["event_type"] for k in kinds]

    await until_async(events_written, 10, "the avatar's event rows")
    kinds = [r["event_type"] for r in await database.pool.fetch(
        "select event_type from avatar_session_events where avatar_session_id = $1 order by timestamp", row["id"]
    )]
    assert kinds[0] == "started" and kinds[-1] == "ended" and "speaking" in kinds, kinds


async def test_barge_in_interrupts_the_avatar_at_once(
    voice_avatar_server: RunningServer, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    _, liveavatar = fakes
    server = voice_avatar_server
    client = await avatar_client(server, http)
    sid = heygen_session_of(client)
    call = server.app[keys.CALLS].get(uuid.UUID(client.session_id))
    assert call is not None
    interrupted_at: list[float] = []
    call.events.subscribe(lambda e: interrupted_at.append(time.monotonic()) if e["type"] == "interrupted" else None)
    try:
        await until(lambda: len(relayed_frames(client)) >= 5, 20, "the avatar's frames")
        long_text = " ".join(["This is a long answer that the avatar reads out word for word."] * 6)
        speaking = asyncio.ensure_future(
            http.post(f"{server.base_url}/api/v1/avatar/sessions/{await avatar_session_id(server, client)}/speak",
                      json={"text": long_text}, headers=client.headers)
        )
        await until(lambda: sound_ms(client.recorder.audio()) > 500, 15, "the avatar speaking")
        client.source.play(with_silence(utterance("Wait, stop please."), 0.1, 1.0))
        await until(lambda: bool(interrupted_at), 10, "the barge-in")
        # After the interrupt the relayed audio falls silent (the avatar stopped, its buffer dropped), while
        # the user is still speaking: the answer to what they say comes only once their turn has ended.
        await asyncio.sleep(0.3)
        client.recorder.reset()
        await asyncio.sleep(0.7)
        assert sound_ms(client.recorder.audio(), threshold=2000) < 100
        interrupts = await liveavatar.wait_for("interrupt", 1, timeout=5)
        mine = [c for c in interrupts if c["session_id"] == sid]
        assert mine, interrupts
        # Sent as the barge-in happened, not after the reply's queued audio.
        assert mine[0]["at"] - interrupted_at[0] < 0.5, (mine[0]["at"], interrupted_at[0])
        response = await speaking
        assert response.status == 200
    finally:
        await client.hangup(http)
    await until(lambda: bool(stops_of(liveavatar, sid)), 10, "stop at the avatar")


async def avatar_session_id(server: RunningServer, client: object) -> str:
    session = getattr(client, "session")
    return str(session["avatar"]["avatar_session_id"])
