"""A chat message on a call whose voice is the LiveAvatar's: the avatar says the reply, and the history says so."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

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
    until,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def voice_avatar_server(
    database: Database, tmp_path_factory: pytest.TempPathFactory, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar]
) -> AsyncIterator[RunningServer]:
    settings = avatar_settings(database, tmp_path_factory.mktemp("avatar-chat"), fakes[1], pipeline="voice")
    runner, server = await start_server(settings)
    yield server
    await runner.cleanup()


async def test_a_chat_reply_is_spoken_by_the_avatar_and_stored_as_heard(
    voice_avatar_server: RunningServer, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar], http: aiohttp.ClientSession
) -> None:
    _, liveavatar = fakes
    server = voice_avatar_server
    client = await avatar_client(server, http)
    events: list[dict[str, object]] = []
    ws = await events_socket(server, http, client)

    async def follow() -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                events.append(json.loads(message.data))

    task = asyncio.ensure_future(follow())
    try:
        sid = heygen_session_of(client)
        await until(lambda: len(relayed_frames(client)) >= 15, 20, "the avatar's frames at the client")
        body = {"content": "What is the date today?", "session_id": client.session_id, "enable_avatar_speech": True}
        async with http.post(f"{server.base_url}/api/v1/chat/messages", json=body, headers=client.headers) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
        assert answer["spoken"] is True and answer["spoken_by"] == "avatar" and "today" in answer["content"].lower()
        await until(lambda: bool(liveavatar.spoken(sid)), 10, "agent.speak at the avatar")
        await until(lambda: [e["speaking"] for e in events if e["type"] == "bot_speaking"][-2:] == [True, False], 20, "the reply to end")
        url = f"{server.base_url}/api/v1/sessions/{client.session_id}/messages"
        for _ in range(50):  # the reply is marked heard once the avatar's audio has played out
            async with http.get(url, headers=client.headers) as resp:
                messages = (await resp.json())["messages"]
            if len(messages) == 2 and messages[1]["spoken_characters"] is not None:
                break
            await asyncio.sleep(0.2)
        assert [m["message_id"] for m in messages] == [answer["user_message_id"], answer["message_id"]]
        reply = messages[1]
        assert reply["source"] == "voice" and reply["interrupted"] is False and reply["content"] == answer["content"]
        assert reply["spoken_characters"] == reply["generated_characters"] == len(answer["content"])
    finally:
        task.cancel()
        await ws.close()
        await client.hangup(http)
