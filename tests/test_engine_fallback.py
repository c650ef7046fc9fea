"""ENGINE_FALLBACK=offline: a call whose cloud engine fails for good goes on with the offline engine of that kind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest

from agent_bridge.config import EngineConfig
from storage.database import Database
from tests.conftest import server_settings, start_server
from tests.fakes.google_engines import google_fakes_config
from tests.fakes.speech_fake import Fault as SpeechFault
from tests.fakes.speech_fake import FakeSpeech
from tests.fakes.tts_fake import Fault as TtsFault
from tests.fakes.tts_fake import FakeTextToSpeech
from tests.fakes.vertex_fake import ENGINE, VertexFake
from tests.rtc_client import RATE
from tests.speech import utterance, voiced_seconds, with_silence
from tests.test_voice_loop import connected_client, words

pytestmark = pytest.mark.asyncio(loop_scope="session")

TONE_HZ = 660.0


async def fallback_of(log, kind: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    for _ in range(200):
        found = [e for e in log.of("engine_fallback") if e["kind"] == kind]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no engine_fallback for {kind}: {log.of('engine_fallback')}")


def tone_share(samples: np.ndarray) -> float:
    """How much of the audio's energy is the fake voice's tone."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size))) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / RATE)
    return float(spectrum[np.abs(freqs - TONE_HZ) < 25].sum() / spectrum.sum())


async def test_each_failed_cloud_engine_falls_back_to_its_offline_one(
    database: Database, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    speech, tts, vertex = FakeSpeech(), FakeTextToSpeech(tone_hz=TONE_HZ, seconds_per_char=0.02), VertexFake()
    await speech.start()
    await tts.start()
    await vertex.start()
    engines = google_fakes_config(
        speech, tts, agent_engine="vertex", vertex_agent_engine=ENGINE, vertex_api_endpoint=vertex.base_url,
        engine_fallback="offline",
    )  # fmt: skip
    runner, server = await start_server(server_settings(database, tmp_path, pipeline="voice", engines=engines))
    # Every recognition stream of this call is refused (the service is down): its first turn fails for good.
    speech.inject(SpeechFault("refuse", code=grpc.StatusCode.UNAVAILABLE), times=None)
    try:
        client, log = await connected_client(http, server)
        url = f"{server.base_url}/api/v1/sessions/{client.session_id}/messages"
        try:
            # The agent fails for good: an error naming it, then the local agent answers the next turn.
            vertex.faults.stream_status_always = 503
            async with http.post(url, json={"text": "hello"}, headers=client.headers) as resp:
                assert resp.status == 200
            await log.wait_for("error", code="agent_failed", timeout=20)
            assert (await fallback_of(log, "agent"))["engine"] == "local"
            async with http.post(url, json={"text": "what time is it"}, headers=client.headers) as resp:
                reply = (await resp.json())["reply"]
            assert reply  # the local agent answered (the fake agent is still failing)
            await log.wait_for("bot_speaking", speaking=False, timeout=20)

            # Text-to-speech fails for good: the text still arrives, and Piper speaks the next reply.
            tts.inject(TtsFault("abort"), times=None)
            async with http.post(url, json={"text": "thank you"}, headers=client.headers) as resp:
                assert resp.status == 200 and (await resp.json())["reply"]
            await log.wait_for("error", code="tts_failed", timeout=20)
            assert (await fallback_of(log, "tts"))["engine"] == "piper"
            await asyncio.sleep(0.5)
            client.recorder.reset()
            count = len(log.events)  # before the request: the reply may start playing before it answers
            async with http.post(url, json={"text": "say hello to my friend"}, headers=client.headers) as resp:
                assert resp.status == 200
            await log.wait_for("bot_speaking", speaking=True, after=count, timeout=20)
            await log.wait_for("bot_speaking", speaking=False, after=count, timeout=20)
            await asyncio.sleep(0.3)
            heard = client.recorder.audio()
            assert voiced_seconds(heard) > 0.5 and tone_share(heard) < 0.3  # a voice, not the fake's tone

            # Speech-to-text fails for good: the turn is reported, and Whisper hears the next one.
            client.source.play(with_silence(utterance("What time is it?"), after_s=1.0))
            await log.wait_for("error", code="stt_failed", timeout=30)
            assert (await fallback_of(log, "stt"))["engine"] == "whisper"
            await asyncio.sleep(1.5)
            count = len(log.events)
            client.source.play(with_silence(utterance("What time is it?"), after_s=1.0))
            final = await log.wait_for("transcript", final=True, after=count, timeout=30)
            assert {"what", "time"} <= words(str(final["text"])), final
        finally:
            log.close()
            await client.hangup(http)
    finally:
        await runner.cleanup()
        await speech.stop()
        await tts.stop()
        await vertex.close()


async def test_fallback_setting_is_checked() -> None:
    assert EngineConfig.from_env({"ENGINE_FALLBACK": "offline"}).engine_fallback == "offline"
    assert EngineConfig.from_env({}).engine_fallback is None
    with pytest.raises(ValueError, match="ENGINE_FALLBACK"):
        EngineConfig.from_env({"ENGINE_FALLBACK": "sometimes"})
