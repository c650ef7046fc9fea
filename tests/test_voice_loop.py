"""The voice loop over real WebRTC with the offline engines: speak, hear the answer, interrupt it, chat."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from signaling import keys
from tests.conftest import RunningServer
from tests.rtc_client import RtcClient
from tests.speech import rms, utterance, voiced_seconds, with_silence

pytestmark = pytest.mark.asyncio(loop_scope="session")


class EventLog:
    """The session's WebSocket events, collected as they come."""

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self, http: aiohttp.ClientSession, server: RunningServer, client: RtcClient) -> None:
        ws = await http.ws_connect(f"{server.base_url}/api/v1/sessions/{client.session_id}/events?access_token={client.token}")
        self._task = asyncio.ensure_future(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(message.data))
                self._changed.set()

    def of(self, kind: str, **match: object) -> list[dict[str, object]]:
        return [e for e in self.events if e["type"] == kind and all(e.get(k) == v for k, v in match.items())]

    async def wait_for(self, kind: str, timeout: float = 15.0, after: int = 0, **match: object) -> dict[str, object]:
        async def find() -> dict[str, object]:
            while True:
                for event in self.events[after:]:
                    if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                        return event
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def connected_client(http: aiohttp.ClientSession, server: RunningServer) -> tuple[RtcClient, EventLog]:
    client = RtcClient(server.base_url, server.token())
    await client.create_session(http)
    log = EventLog()
    await log.open(http, server, client)
    await client.connect(http)
    await client.wait_connected()
    await log.wait_for("state", state="connected")
    return client, log


@asynccontextmanager
async def live_call(http: aiohttp.ClientSession, server: RunningServer) -> AsyncIterator[tuple[RtcClient, EventLog]]:
    """A connected call for the body of a `with`; its event log closed and the call hung up on the way out."""
    client, log = await connected_client(http, server)
    try:
        yield client, log
    finally:
        log.close()
        await client.hangup(http)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


async def test_spoken_question_gets_a_spoken_answer(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with live_call(http, voice_server) as (client, log):
        client.source.play(with_silence(utterance("Hello, what time is it?")))
        final = await log.wait_for("transcript", final=True)
        assert {"what", "time", "is", "it"} <= words(str(final["text"])), final
        reply = await log.wait_for("agent_text", final=True)
        assert re.search(r"\d{1,2}:\d{2}", str(reply["text"])), reply
        await log.wait_for("bot_speaking", speaking=True)
        metrics = await log.wait_for("turn_metrics")
        for field in ("stt_ms", "agent_first_text_ms", "tts_first_audio_ms", "voice_to_voice_ms"):
            assert isinstance(metrics[field], int) and metrics[field] >= 0, metrics
        # Voice to voice includes the end-of-turn silence.
        assert metrics["voice_to_voice_ms"] >= 500
        client.recorder.reset()
        await log.wait_for("bot_speaking", speaking=False)
        heard = client.recorder.audio()
        assert voiced_seconds(heard) > 0.5 and rms(heard) > 300


async def test_interim_transcripts_arrive_while_speaking(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with live_call(http, voice_server) as (client, log):
        long_sentence = "Please repeat after me: the quick brown fox jumps over the lazy dog near the river bank."
        client.source.play(with_silence(utterance(long_sentence)))
        final = await log.wait_for("transcript", final=True, timeout=20)
        interims = log.of("transcript", final=False)
        assert interims, "no interim transcript before the final one"
        assert log.events.index(interims[0]) < log.events.index(final)
        expected = words(long_sentence)
        assert len(expected & words(str(final["text"]))) >= 0.7 * len(expected), final
        reply = await log.wait_for("agent_text", final=True)
        assert "fox" in str(reply["text"]).lower()


async def test_barge_in_stops_the_bot_within_a_frame(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with live_call(http, voice_server) as (client, log):
        call = voice_server.app[keys.CALLS].get(uuid.UUID(client.session_id))
        assert call is not None
        # The fallback answer is long: plenty of time to interrupt it.
        client.source.play(with_silence(utterance("Tell me a story about the ocean."), after_s=0.7))
        await log.wait_for("bot_speaking", speaking=True, timeout=20)
        await asyncio.sleep(0.8)
        assert call.audio_out.queued_samples > 0
        mark = len(log.events)
        client.source.play(with_silence(utterance("Stop, what is the date today?"), before_s=0.0))
        interrupted = await log.wait_for("interrupted", after=mark)
        # The flush happened at once: nothing of the old reply is left queued.
        assert interrupted["reason"] == "barge_in" and interrupted["dropped_ms"] > 0
        # The speech meter holds what was sent, never what was queued and then dropped.
        queue = call.audio_out.queue
        speech_us = next(s.amount for s in call.usage_snapshot() if s.meter == "speech")
        assert speech_us == queue.sent_total * 1_000_000 // 48_000
        assert queue.sent_total + interrupted["dropped_ms"] * 48 <= queue.pushed_total
        await log.wait_for("bot_speaking", speaking=False, after=mark)
        # The new question is answered.
        final = await log.wait_for("transcript", final=True, after=mark)
        assert "date" in words(str(final["text"]))
        reply = await log.wait_for("agent_text", final=True, after=mark)
        assert "today" in str(reply["text"]).lower()


async def test_chat_messages_are_answered_and_spoken(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with live_call(http, voice_server) as (client, log):
        call = voice_server.app[keys.CALLS].get(uuid.UUID(client.session_id))
        assert call is not None
        await asyncio.sleep(0.5)
        client.recorder.reset()
        call.audio_out.reset_gap_stats()
        url = f"{voice_server.base_url}/api/v1/sessions/{client.session_id}/messages"
        async with http.post(url, json={"text": "What is the date today?"}, headers=client.headers) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        assert "today" in body["reply"].lower()
        await log.wait_for("bot_speaking", speaking=True)
        await log.wait_for("bot_speaking", speaking=False, timeout=20)
        heard = client.recorder.audio()
        assert voiced_seconds(heard) > 0.5
        # Frames kept their 20 ms pacing while TTS was synthesising.
        assert call.audio_out.max_frame_gap_ms < 40, call.audio_out.max_frame_gap_ms
        async with http.post(url, json={"text": "  "}, headers=client.headers) as resp:
            assert resp.status == 400


async def test_chat_before_the_offer_is_a_409(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    client = RtcClient(voice_server.base_url, voice_server.token())
    await client.create_session(http)
    url = f"{voice_server.base_url}/api/v1/sessions/{client.session_id}/messages"
    async with http.post(url, json={"text": "hello"}, headers=client.headers) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "invalid_state"
