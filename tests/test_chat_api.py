"""History from live voice calls over real WebRTC: chat spoken or not, spoken turns, a reply cut short."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import aiohttp
import pytest

from signaling import keys
from tests.conftest import RunningServer
from tests.speech import utterance, voiced_seconds, with_silence
from tests.test_history_api import all_messages, chat
from tests.test_voice_loop import live_call, words

pytestmark = pytest.mark.asyncio(loop_scope="session")

Message = dict[str, object]


async def wait_for_messages(
    http: aiohttp.ClientSession, server: RunningServer, headers: dict[str, str], session_id: str,
    ready: Callable[[list[Message]], bool], timeout: float = 30.0,
) -> list[Message]:  # fmt: skip
    """The session's messages once `ready` says so (the call writes them in the background)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        messages = await all_messages(http, server, headers, session_id)
        if ready(messages):
            return messages
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"messages not as expected: {messages}")
        await asyncio.sleep(0.2)


def heard_whole(message: Message) -> bool:
    return message["role"] == "agent" and message["spoken_characters"] is not None


async def test_chat_on_a_live_call_is_spoken_when_asked(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with live_call(http, voice_server) as (client, log):
        session_id = str(client.session_id)
        await asyncio.sleep(0.3)
        client.recorder.reset()
        mark = len(log.events)
        answer = await chat(http, voice_server, client.headers, session_id, "What is the date today?", enable_avatar_speech=True)
        assert answer["spoken"] is True and answer["spoken_by"] == "voice"
        assert "today" in str(answer["content"]).lower()
        await log.wait_for("bot_speaking", speaking=True, after=mark)
        await log.wait_for("bot_speaking", speaking=False, after=mark, timeout=20)
        assert voiced_seconds(client.recorder.audio()) > 0.5
        # Both are stored as the response came back; the reply is marked heard once its audio has gone out.
        messages = await wait_for_messages(http, voice_server, client.headers, session_id, lambda ms: len(ms) == 2 and heard_whole(ms[1]))
        question, reply = messages
        assert question["message_id"] == answer["user_message_id"] and question["source"] == "text"
        assert question["content"] == "What is the date today?"
        assert reply["message_id"] == answer["message_id"] and reply["source"] == "voice"
        assert reply["content"] == answer["content"] and reply["interrupted"] is False
        assert reply["spoken_characters"] == reply["generated_characters"] == len(str(answer["content"]))


async def test_chat_on_a_live_call_is_not_spoken_unless_asked(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with live_call(http, voice_server) as (client, log):
        session_id = str(client.session_id)
        await asyncio.sleep(0.3)
        client.recorder.reset()
        mark = len(log.events)
        answer = await chat(http, voice_server, client.headers, session_id, "What is the date today?")
        assert answer["spoken"] is False and answer["spoken_by"] is None
        assert "today" in str(answer["content"]).lower()
        # The call's conversation answered: its text went out on the call's events, its voice did not.
        final = await log.wait_for("agent_text", final=True, after=mark)
        assert final["text"] == answer["content"]
        await asyncio.sleep(2.0)
        assert log.of("bot_speaking") == [] and voiced_seconds(client.recorder.audio()) == 0.0
        assert voice_server.app[keys.CALLS].get(uuid.UUID(session_id)).audio_out.queue.pushed_total == 0
        messages = await all_messages(http, voice_server, client.headers, session_id)
        assert [m["message_id"] for m in messages] == [answer["user_message_id"], answer["message_id"]]
        assert messages[1]["source"] == "text" and messages[1]["spoken_characters"] is None
        assert messages[1]["content"] == answer["content"]


async def test_a_spoken_turn_is_stored_with_its_times(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with live_call(http, voice_server) as (client, log):
        session_id = str(client.session_id)
        client.source.play(with_silence(utterance("Hello, what time is it?"), before_s=1.0))
        final = await log.wait_for("transcript", final=True, timeout=30)
        await log.wait_for("bot_speaking", speaking=False, timeout=30, after=log.events.index(final))
        messages = await wait_for_messages(http, voice_server, client.headers, session_id, lambda ms: len(ms) == 2 and heard_whole(ms[1]))
        question, reply = messages
        assert question["role"] == "user" and question["source"] == "voice" and question["content"] == final["text"]
        start, end = question["turn_start_ms"], question["turn_end_ms"]
        assert isinstance(start, int) and isinstance(end, int) and start < end, question
        # The utterance lasts about as long as the speech that was played, after ~1 s of silence.
        spoken_ms = len(utterance("Hello, what time is it?")) * 1000 // 48_000
        assert 500 <= start <= 3000, question
        assert 0.5 * spoken_ms <= end - start <= spoken_ms + 1000, (question, spoken_ms)
        assert reply["role"] == "agent" and reply["source"] == "voice" and reply["interrupted"] is False
        assert {"what", "time"} <= words(str(question["content"]))
        assert reply["spoken_characters"] == reply["generated_characters"] == len(str(reply["content"]))
    # After the call: the session list shows what it used and how many messages it holds.
    async with http.get(f"{voice_server.base_url}/api/v1/sessions", headers=client.headers) as resp:
        listed = (await resp.json())["sessions"]
    assert listed[0]["session_id"] == session_id and listed[0]["message_count"] == 2
    assert listed[0]["usage"]["mic_audio_seconds"] > 1.0 and listed[0]["usage"]["tts_characters"] > 0


async def test_an_interrupted_reply_is_stored_as_spoken(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with live_call(http, voice_server) as (client, log):
        session_id = str(client.session_id)
        # The demo agent's fallback answer is long: plenty of time to interrupt it (as the barge-in test does).
        client.source.play(with_silence(utterance("Tell me a story about the ocean."), after_s=0.7))
        first = await log.wait_for("agent_text", final=True, timeout=30)
        await log.wait_for("bot_speaking", speaking=True, timeout=30)
        await asyncio.sleep(0.8)
        mark = len(log.events)
        client.source.play(with_silence(utterance("Stop, what is the date today?"), before_s=0.0))
        interrupted = await log.wait_for("interrupted", after=mark, timeout=30)
        assert interrupted["reason"] == "barge_in"
        await log.wait_for("agent_text", final=True, after=mark, timeout=30)

        def settled(ms: list[Message]) -> bool:
            return len(ms) == 4 and heard_whole(ms[1]) and heard_whole(ms[3])

        messages = await wait_for_messages(http, voice_server, client.headers, session_id, settled, timeout=40)
        assert [(m["role"], m["source"]) for m in messages] == [("user", "voice"), ("agent", "voice")] * 2
        cut = messages[1]
        full = str(first["text"])
        assert cut["interrupted"] is True and cut["generated_characters"] == len(full)
        content = str(cut["content"])
        # The bot spoke for 0.8 s and more before it was stopped: some words, far from all of them.
        assert 0 < cut["spoken_characters"] == len(content) < len(full) // 2, (content, full)
        # What was heard is the start of what was written, in whole words.
        assert full.startswith(content) and full[len(content)] in " .,:;!?'", (content, full)
        assert messages[3]["interrupted"] is False and "today" in str(messages[3]["content"]).lower()
        assert "date" in words(str(messages[2]["content"]))
        assert int(messages[0]["turn_end_ms"]) <= int(messages[2]["turn_start_ms"])  # type: ignore[call-overload]


async def test_chat_reaches_a_call_on_another_node(
    voice_server: RunningServer, loopback_server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with live_call(http, voice_server) as (client, log):
        session_id = str(client.session_id)
        mark = len(log.events)
        # Asked of the other node (on the same database): the call's node answers, and speaks.
        answer = await chat(http, loopback_server, client.headers, session_id, "What is the date today?", enable_avatar_speech=True)
        assert answer["spoken"] is True and answer["spoken_by"] == "voice" and "today" in str(answer["content"]).lower()
        await log.wait_for("bot_speaking", speaking=True, after=mark)
        messages = await wait_for_messages(http, loopback_server, client.headers, session_id, lambda ms: len(ms) == 2)
        assert [m["message_id"] for m in messages] == [answer["user_message_id"], answer["message_id"]]


async def test_session_messages_route_is_recorded_too(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with live_call(http, voice_server) as (client, log):
        session_id = str(client.session_id)
        url = f"{voice_server.base_url}/api/v1/sessions/{session_id}/messages"
        async with http.post(url, json={"text": "What is the date today?"}, headers=client.headers) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        assert set(body) == {"text", "reply"} and body["text"] == "What is the date today?"
        messages = await all_messages(http, voice_server, client.headers, session_id)
        assert [(m["role"], m["source"], m["content"]) for m in messages] == [
            ("user", "text", body["text"]), ("agent", "voice", body["reply"])
        ]


async def test_a_reply_cut_by_the_hang_up_is_stored_as_heard(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with live_call(http, voice_server) as (client, log):
        session_id = str(client.session_id)
        mark = len(log.events)
        answer = await chat(http, voice_server, client.headers, session_id, "Tell me a story about the ocean.", enable_avatar_speech=True)
        await log.wait_for("bot_speaking", speaking=True, after=mark)
        await asyncio.sleep(0.6)
    # The hang-up returns once the call has ended, and the call wrote its last word before it ended.
    messages = await all_messages(http, voice_server, client.headers, session_id)
    reply = messages[1]
    assert reply["message_id"] == answer["message_id"] and reply["interrupted"] is True
    assert reply["generated_characters"] == len(str(answer["content"]))
    assert 0 < reply["spoken_characters"] == len(str(reply["content"])) < reply["generated_characters"]
    assert str(answer["content"]).startswith(str(reply["content"]))
