"""Google Text-to-Speech against a local fake of the service, over real gRPC sockets and real WebRTC.

The fake (tests/fakes/tts_fake.py) answers every text with a known tone, so the audio that comes
back can be compared sample for sample, and found by its frequency after the trip through a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest
from google.cloud.texttospeech_v1 import types as tts

from agent_bridge.config import EngineConfig
from agent_bridge.google_tts import DEFAULT_VOICE, GoogleTextToSpeech
from agent_bridge.interfaces import EngineError
from agent_bridge.registry import TTS_ENGINES
from agent_bridge.tts_payloads import WavError, wav_pcm
from signaling import keys
from storage.database import Database
from tests.conftest import server_settings, start_server
from tests.fakes.tts_fake import (
    RATE,
    SERVICE,
    FakeTextToSpeech,
    Fault,
    wav_with_extra_chunk,
)
from tests.test_voice_loop import connected_client

pytestmark = pytest.mark.asyncio(loop_scope="session")

NON_STREAMING_VOICE = "en-US-Neural2-D"
TEXT = "Hello there, this is the fake voice. It speaks a tone instead of words."  # 72 chars: 8 chunks


@pytest.fixture
async def fake() -> AsyncIterator[FakeTextToSpeech]:
    service = FakeTextToSpeech()
    await service.start()
    yield service
    await service.stop()


def engine_for(fake: FakeTextToSpeech, voice: str = DEFAULT_VOICE, **options: float) -> GoogleTextToSpeech:
    options.setdefault("backoff_s", 0.01)
    return GoogleTextToSpeech(voice, "en-US", fake.endpoint, insecure=True, **options)  # type: ignore[arg-type]


async def collect(engine: GoogleTextToSpeech, text: str) -> list[bytes]:
    return [chunk async for chunk in engine.synthesize(text)]


def samples(chunks: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(chunks), dtype="<i2")


async def test_settings_come_from_the_environment_and_bad_ones_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = EngineConfig.from_env({"TTS_ENGINE": "google"})
    assert (defaults.google_tts_voice, defaults.google_tts_language) == ("en-US-Chirp3-HD-Charon", "en-US")
    assert defaults.google_tts_endpoint == "texttospeech.googleapis.com:443" and not defaults.google_api_insecure
    environ = {
        "TTS_ENGINE": "google",
        "GOOGLE_TTS_VOICE": "en-GB-Neural2-A",
        "GOOGLE_TTS_LANGUAGE": "en-GB",
        "GOOGLE_TTS_ENDPOINT": "localhost:50051",
        "GOOGLE_API_INSECURE": "1",
    }
    engine = TTS_ENGINES["google"](EngineConfig.from_env(environ))
    assert isinstance(engine, GoogleTextToSpeech) and not engine.streaming and engine.insecure
    assert (engine.voice, engine.language, engine.endpoint) == ("en-GB-Neural2-A", "en-GB", "localhost:50051")
    bad = {
        "GOOGLE_API_INSECURE": "maybe",
        "GOOGLE_TTS_VOICE": "Charon",
        "GOOGLE_TTS_LANGUAGE": "english",
        "GOOGLE_TTS_ENDPOINT": "https://texttospeech.googleapis.com",
    }
    for variable, value in bad.items():
        with pytest.raises(ValueError, match=variable):
            TTS_ENGINES["google"](EngineConfig.from_env({**environ, variable: value}))
    # Without GOOGLE_API_INSECURE the engine needs Application Default Credentials, and says so at start.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")
    secure = GoogleTextToSpeech()
    with pytest.raises(ValueError, match="GOOGLE_APPLICATION_CREDENTIALS") as missing:
        await secure.warm_up()
    assert "\n" not in str(missing.value)
    await secure.aclose()


async def test_streaming_sends_the_config_first_then_only_text(fake: FakeTextToSpeech) -> None:
    engine = engine_for(fake)
    try:
        assert engine.streaming and engine.sample_rate == 24_000
        audio = samples(await collect(engine, TEXT))
    finally:
        await engine.aclose()
    np.testing.assert_array_equal(audio, fake.tone(TEXT))
    [call] = fake.calls
    assert call.method == "StreamingSynthesize" and call.status == "OK"
    first, second = call.requests
    assert "streaming_config" in first and "input" not in first
    config = first.streaming_config
    assert (config.voice.name, config.voice.language_code) == (DEFAULT_VOICE, "en-US")
    assert config.streaming_audio_config.audio_encoding == tts.AudioEncoding.PCM
    assert config.streaming_audio_config.sample_rate_hertz == 24_000
    assert "input" in second and "streaming_config" not in second and second.input.text == TEXT
    with pytest.raises(EngineError, match="closed"):
        await collect(engine, TEXT)


async def test_the_fake_refuses_text_before_the_config_like_the_service(fake: FakeTextToSpeech) -> None:
    async with grpc.aio.insecure_channel(fake.endpoint) as channel:
        stream = channel.stream_stream(
            f"/{SERVICE}/StreamingSynthesize",
            request_serializer=tts.StreamingSynthesizeRequest.serialize,
            response_deserializer=tts.StreamingSynthesizeResponse.deserialize,
        )
        text_first = [tts.StreamingSynthesizeRequest(input=tts.StreamingSynthesisInput(text="Hi."))]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            [response async for response in stream(iter(text_first))]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_first_audio_plays_before_the_service_has_finished(fake: FakeTextToSpeech) -> None:
    fake.chunk_delay_s = 0.15  # 8 chunks: the fake needs over a second for the whole text
    engine = engine_for(fake)
    loop = asyncio.get_running_loop()
    first_at: float | None = None
    chunks: list[bytes] = []
    try:
        async for chunk in engine.synthesize(TEXT):
            first_at = first_at or loop.time()
            chunks.append(chunk)
    finally:
        await engine.aclose()
    [call] = fake.calls
    assert call.chunks_sent == 8 and len(chunks) == 8
    assert first_at is not None and call.finished_at is not None
    assert first_at < call.finished_at - 0.8, (first_at, call.first_chunk_at, call.finished_at)
    np.testing.assert_array_equal(samples(chunks), fake.tone(TEXT))


async def test_other_voices_get_linear16_with_the_wav_header_parsed_off(fake: FakeTextToSpeech) -> None:
    engine = engine_for(fake, NON_STREAMING_VOICE)
    try:
        assert not engine.streaming
        audio = samples(await collect(engine, TEXT))
    finally:
        await engine.aclose()
    [call] = fake.calls
    assert call.method == "SynthesizeSpeech"
    [request] = call.requests
    assert request.audio_config.audio_encoding == tts.AudioEncoding.LINEAR16
    assert request.audio_config.sample_rate_hertz == 24_000
    assert (request.voice.name, request.input.text) == (NON_STREAMING_VOICE, TEXT)
    # The fake's header is 70 bytes, not 44: a fixed cut would play header bytes as a click.
    assert len(wav_with_extra_chunk(b"")) == 70
    expected = fake.tone(TEXT)
    np.testing.assert_array_equal(audio[:48], expected[:48])  # the very first samples are the tone
    np.testing.assert_array_equal(audio, expected)


async def test_wav_parsing_refuses_what_it_cannot_play() -> None:
    pcm = np.arange(10, dtype="<i2").tobytes()
    assert wav_pcm(wav_with_extra_chunk(pcm), RATE) == pcm
    with pytest.raises(WavError, match="sample rate"):
        wav_pcm(wav_with_extra_chunk(pcm), 16_000)
    with pytest.raises(WavError):
        wav_pcm(b"ID3" + pcm, RATE)  # an MP3, say
    with pytest.raises(WavError, match="no data"):
        wav_pcm(wav_with_extra_chunk(pcm)[:-(len(pcm) + 8)], RATE)


async def test_long_input_is_cut_under_5000_bytes_at_sentence_ends(fake: FakeTextToSpeech) -> None:
    fake.seconds_per_char = 0.0005  # keep 12 kB of text to a few seconds of audio
    before = " ".join(f"Sentence number {i} says café crème, naïvely." for i in range(160))  # ~7.5 kB
    long_sentence = " ".join(f"word{i}" for i in range(1000)) + "."  # ~6.9 kB without a sentence end
    after = " ".join(f"Is this question {i} short?" for i in range(40))
    text = f"{before} {long_sentence} {after}"
    engine = engine_for(fake)
    try:
        audio = samples(await collect(engine, text))
    finally:
        await engine.aclose()
    pieces = [call.requests[1].input.text for call in fake.calls]
    assert all(call.status == "OK" and len(call.requests) == 2 for call in fake.calls)
    assert all(len(piece.encode("utf-8")) <= 5000 for piece in pieces)
    assert len(pieces) == 4  # packed: sentences share a request while they fit
    joined = " ".join(pieces)
    assert joined == text
    long_start = text.index(long_sentence)
    long_end = long_start + len(long_sentence)
    cut = 0
    for piece in pieces[:-1]:
        cut += len(piece)
        # Each cut follows a sentence end, or falls between two words of the over-long sentence.
        assert text[cut - 1] in ".?" or long_start < cut < long_end, text[cut - 20 : cut + 20]
        assert text[cut] == " "
        cut += 1
    np.testing.assert_array_equal(audio, np.concatenate([fake.tone(piece) for piece in pieces]))


@pytest.mark.parametrize("voice", [DEFAULT_VOICE, NON_STREAMING_VOICE])
async def test_unavailable_and_timeouts_before_audio_are_retried(fake: FakeTextToSpeech, voice: str) -> None:
    engine = engine_for(fake, voice, timeout_s=0.5, attempts=3)
    try:
        fake.inject(Fault("abort"), times=2)  # UNAVAILABLE twice, then it works
        np.testing.assert_array_equal(samples(await collect(engine, TEXT)), fake.tone(TEXT))
        assert [call.status for call in fake.calls] == ["UNAVAILABLE", "UNAVAILABLE", "OK"]

        fake.calls.clear()
        fake.inject(Fault("stall", stall_s=1.5))  # past the engine's 0.5 s wait for audio
        np.testing.assert_array_equal(samples(await collect(engine, TEXT)), fake.tone(TEXT))
        assert len(fake.calls) == 2

        fake.calls.clear()
        fake.inject(Fault("abort"), times=None)  # down for good: give up after the attempts
        with pytest.raises(EngineError, match=r"unavailable \(UNAVAILABLE\), after 3 attempts") as failed:
            await collect(engine, TEXT)
        assert failed.value.engine == "google-tts" and len(fake.calls) == 3
        fake.clear_faults()

        fake.calls.clear()
        fake.inject(Fault("abort", code=grpc.StatusCode.INVALID_ARGUMENT))  # the request itself is wrong
        with pytest.raises(EngineError, match="INVALID_ARGUMENT"):
            await collect(engine, TEXT)
        assert len(fake.calls) == 1
    finally:
        await engine.aclose()


async def test_a_later_piece_is_retried_when_none_of_its_audio_was_played(fake: FakeTextToSpeech) -> None:
    fake.seconds_per_char = 0.0005
    text = " ".join(f"Sentence {i} of a long reply." for i in range(300))  # ~8.6 kB: two pieces
    engine = engine_for(fake)
    try:
        fake.inject(Fault("stall", stall_s=0.0))  # the first piece goes through
        fake.inject(Fault("abort"))  # the second fails before any of its audio
        audio = samples(await collect(engine, text))
    finally:
        await engine.aclose()
    assert [call.status for call in fake.calls] == ["OK", "UNAVAILABLE", "OK"]
    pieces = [fake.calls[0].requests[1].input.text, fake.calls[2].requests[1].input.text]
    np.testing.assert_array_equal(audio, np.concatenate([fake.tone(piece) for piece in pieces]))


async def test_a_caller_that_stops_listening_ends_the_stream(fake: FakeTextToSpeech) -> None:
    fake.chunk_delay_s = 0.1
    engine = engine_for(fake)
    try:
        async with contextlib.aclosing(engine.synthesize(TEXT)) as audio:
            async for _ in audio:
                break  # a barge-in: the rest of the sentence is not wanted
        for _ in range(50):
            if fake.calls[0].status != "OK":
                break
            await asyncio.sleep(0.02)
    finally:
        await engine.aclose()
    [call] = fake.calls
    assert call.status == "CANCELLED" and call.chunks_sent < 4, call


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL])
async def test_a_stream_dropped_after_audio_raises_without_repeating_it(fake: FakeTextToSpeech, code: grpc.StatusCode) -> None:
    fake.inject(Fault("drop", code=code, after_chunks=3))
    engine = engine_for(fake)
    got: list[bytes] = []
    try:
        with pytest.raises(EngineError, match="after its audio had started") as failed:
            async for chunk in engine.synthesize(TEXT):
                got.append(chunk)
    finally:
        await engine.aclose()
    assert failed.value.engine == "google-tts"
    assert len(fake.calls) == 1  # not retried: the caller already played the start
    step = RATE // 10
    np.testing.assert_array_equal(samples(got), fake.tone(TEXT)[: 3 * step])


async def test_a_typed_message_is_spoken_in_the_fake_voice_over_webrtc(
    database: Database, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    tone_hz = 660.0
    fake = FakeTextToSpeech(tone_hz=tone_hz, seconds_per_char=0.03)
    await fake.start()
    engines = EngineConfig(tts_engine="google", google_tts_endpoint=fake.endpoint, google_api_insecure=True)
    runner, server = await start_server(server_settings(database, tmp_path, pipeline="voice", engines=engines))
    try:
        client, log = await connected_client(http, server)
        call = server.app[keys.CALLS].get(uuid.UUID(client.session_id))
        assert call is not None
        try:
            await asyncio.sleep(0.5)
            client.recorder.reset()
            call.audio_out.reset_gap_stats()
            url = f"{server.base_url}/api/v1/sessions/{client.session_id}/messages"
            async with http.post(url, json={"text": "What is the date today?"}, headers=client.headers) as resp:
                assert resp.status == 200, await resp.text()
                reply = (await resp.json())["reply"]
            await log.wait_for("bot_speaking", speaking=True)
            await log.wait_for("bot_speaking", speaking=False, timeout=20)
            await asyncio.sleep(0.3)  # the last frames sent are still on their way to the client
            heard = client.recorder.audio()
            assert not log.of("error"), log.of("error")
            # Frames kept their 20 ms pacing while the engine talked to the fake.
            assert call.audio_out.max_frame_gap_ms < 40, call.audio_out.max_frame_gap_ms
        finally:
            log.close()
            await client.hangup(http)
    finally:
        await runner.cleanup()
        await fake.stop()
    # Every sentence of the reply went to the fake, each in a request of its own, config first.
    spoken = [c.requests[1].input.text for c in fake.calls]
    assert all(c.method == "StreamingSynthesize" and c.status == "OK" for c in fake.calls)
    assert re.sub(r"\s+", " ", " ".join(spoken)) == re.sub(r"\s+", " ", reply.strip())
    # What the client heard is the fake's tone, found by its frequency after resampling and Opus.
    loud = np.flatnonzero(np.abs(heard.astype(np.int32)) > 2000)
    assert loud.size, "no audio from the bot"
    segment = heard[loud[0] : loud[-1]].astype(np.float64)
    expected_s = sum(len(text) for text in spoken) * fake.seconds_per_char
    # All of it, once: nothing lost, nothing repeated.
    assert 0.9 * expected_s < segment.size / 48_000 < expected_s + 0.1, (segment.size / 48_000, expected_s)
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(segment.size))) ** 2
    freqs = np.fft.rfftfreq(segment.size, 1 / 48_000)
    peak = freqs[np.argmax(spectrum)]
    assert abs(peak - tone_hz) < 3, peak
    near = spectrum[np.abs(freqs - tone_hz) < 25].sum() / spectrum.sum()
    assert near > 0.8, near
