"""One call with all three cloud engines, each on its fake over a real socket: speech in, the agent's
reply spoken back, metered and timed like any other turn."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from signaling import keys
from storage.database import Database
from tests.conftest import server_settings, start_server
from tests.fakes.google_engines import google_fakes_config
from tests.fakes.speech_fake import WORDS, FakeSpeech
from tests.fakes.tts_fake import FakeTextToSpeech
from tests.fakes.vertex_fake import ENGINE, VertexFake
from tests.rtc_client import RATE
from tests.speech import utterance, with_silence
from tests.test_voice_loop import connected_client

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPLY_TONE_HZ = 660.0


def marked_speech() -> np.ndarray:
    """Real speech (so our VAD hears a turn) carrying two marker tones the speech fake recognises as words."""
    speech = utterance("Hello there, what time is it?").astype(np.float64)
    t = np.arange(speech.size) / RATE
    first = np.arange(speech.size) < speech.size // 2
    tone = np.where(first, np.sin(2 * np.pi * WORDS["kilo"] * t), np.sin(2 * np.pi * WORDS["lima"] * t))
    return with_silence(np.clip(speech + 9000 * tone, -32767, 32767).astype(np.int16), before_s=0.5, after_s=2.0)


def dominant_hz(samples: np.ndarray) -> float:
    window = samples.astype(np.float64) * np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(window))
    return float(np.fft.rfftfreq(samples.size, 1 / RATE)[int(np.argmax(spectrum[1:])) + 1])


async def test_speech_to_fake_transcript_to_fake_agent_to_fake_voice(
    database: Database, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    speech, tts, vertex = FakeSpeech(), FakeTextToSpeech(tone_hz=REPLY_TONE_HZ, seconds_per_char=0.02), VertexFake()
    await speech.start()
    await tts.start()
    await vertex.start()
    engines = google_fakes_config(speech, tts, agent_engine="vertex", vertex_agent_engine=ENGINE, vertex_api_endpoint=vertex.base_url)
    runner, server = await start_server(server_settings(database, tmp_path, pipeline="voice", engines=engines))
    try:
        client, log = await connected_client(http, server)
        session_id = uuid.UUID(client.session_id)
        try:
            # The agent session is made with the user session, for this caller, stored with it, and the call
            # continues it (no second one).
            await asyncio.sleep(0.5)
            assert [user for user, _ in vertex.created] == [server.tokens.verify(client.token).user_id]
            agent_session = vertex.created[0][1]
            assert client.session["agent_session_id"] == agent_session
            await asyncio.sleep(0.3)
            stored = await database.pool.fetchval("select agent_session_id from user_sessions where id = $1", session_id)
            assert stored == agent_session

            client.recorder.reset()
            client.source.play(marked_speech())
            final = await log.wait_for("transcript", final=True, timeout=20)
            # The transcript is what the speech fake heard in the audio, word for word.
            assert final["text"] and set(str(final["text"]).split()) <= {"kilo", "lima"}, final
            assert final["text"] in speech.finals() or str(final["text"]) == " ".join(speech.finals()), (final, speech.finals())
            reply = await log.wait_for("agent_text", final=True, timeout=20)
            assert str(final["text"]) in str(reply["text"])  # the fake agent echoes what it was asked
            assert [s.message for s in vertex.streams][-1] == final["text"]
            assert all(s.user_id == vertex.created[0][0] and s.session_id == agent_session for s in vertex.streams)
            metrics = await log.wait_for("turn_metrics", timeout=20)
            assert metrics["voice_to_voice_ms"] is not None and metrics["voice_to_voice_ms"] > 0, metrics
            await log.wait_for("bot_speaking", speaking=False, timeout=20)
            await asyncio.sleep(0.3)
            heard = client.recorder.audio()
            loud = np.flatnonzero(np.abs(heard.astype(np.int32)) > 2000)
            assert loud.size, "no reply audio reached the client"
            assert abs(dominant_hz(heard[loud[0] : loud[-1]]) - REPLY_TONE_HZ) < 5
            assert not log.of("error"), log.of("error")

            call = server.app[keys.CALLS].get(session_id)
            assert call is not None
            meters = {s.meter: s.amount for s in call.usage_snapshot()}
            assert meters["stt_audio"] > 0 and meters["tts_characters"] >= len(str(reply["text"])) - 2 and meters["agent_tokens"] > 0
        finally:
            log.close()
            await client.hangup(http)
        # The agent session goes with the call.
        for _ in range(100):
            if vertex.deleted:
                break
            await asyncio.sleep(0.05)
        assert [sid for _, sid in vertex.deleted] == [agent_session]
    finally:
        await runner.cleanup()
        await speech.stop()
        await tts.stop()
        await vertex.close()
