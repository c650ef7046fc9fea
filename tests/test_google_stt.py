"""Google Speech-to-Text v2 against a local fake of the service, over a real gRPC socket.

The fake (tests/fakes/speech_fake.py) recognises the audio itself: utterances are tone bursts, each
word its own frequency, so every transcript comes from the audio that actually reached it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import grpc.aio
import numpy as np
import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud.speech_v2 import SpeechAsyncClient
from google.cloud.speech_v2.services.speech.transports import SpeechGrpcAsyncIOTransport
from google.cloud.speech_v2.types import cloud_speech

from agent_bridge.config import EngineConfig
from agent_bridge.google_stt import GoogleSpeechSession, GoogleSpeechToText
from agent_bridge.google_stt_settings import GoogleSpeechSettings
from agent_bridge.google_stt_stream import StreamTuning
from agent_bridge.interfaces import EngineError, Transcript
from agent_bridge.registry import build_engines
from tests.fakes.speech_fake import (
    BYTES_PER_MS,
    MAX_AUDIO_BYTES,
    FakeSpeech,
    Fault,
    RecordedStream,
    silence,
    speech_pcm,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROJECT = "demo-project"
CHUNK = 20 * BYTES_PER_MS  # the pipeline pushes 20 ms at a time


@pytest.fixture
async def fake() -> AsyncIterator[FakeSpeech]:
    service = FakeSpeech()
    await service.start()
    yield service
    await service.stop()


@dataclass
class Call:
    engine: GoogleSpeechToText
    session: GoogleSpeechSession
    interims: list[Transcript] = field(default_factory=list)
    errors: list[EngineError] = field(default_factory=list)
    pushed: bytearray = field(default_factory=bytearray)

    async def say(self, pcm: bytes) -> None:
        """Push 20 ms chunks, yielding to the loop between them as a call's inbound audio does."""
        for offset in range(0, len(pcm), CHUNK):
            self.session.push(pcm[offset : offset + CHUNK])
            self.pushed += pcm[offset : offset + CHUNK]
            await asyncio.sleep(0)

    async def turn(self, *phrases: str) -> Transcript | None:
        await self.say(speech_pcm(*phrases))
        return await self.session.finish_turn()


def settings_for(fake: FakeSpeech) -> GoogleSpeechSettings:
    config = EngineConfig(google_cloud_project=PROJECT, google_speech_endpoint=fake.endpoint, google_api_insecure=True)
    return GoogleSpeechSettings.from_config(config)


@asynccontextmanager
async def call_on(fake: FakeSpeech, **tuning: float) -> AsyncIterator[Call]:
    tuning.setdefault("backoff_s", 0.05)
    tuning.setdefault("final_wait_s", 0.5)
    engine = GoogleSpeechToText(settings_for(fake), StreamTuning(**tuning))  # type: ignore[arg-type]
    await engine.warm_up()
    interims: list[Transcript] = []
    errors: list[EngineError] = []
    session = engine.open_session(interims.append, errors.append)
    try:
        yield Call(engine, session, interims, errors)
    finally:
        await session.aclose()
        await engine.aclose()


def texts(transcripts: list[Transcript | None]) -> list[str | None]:
    return [t.text if t is not None else None for t in transcripts]


def assert_streams_tile_the_audio(streams: list[RecordedStream], pushed: bytes, exact: bool = True) -> None:
    """Each stream goes on where the one before had finalised, past the silence the session added there
    (not `exact`: or at an earlier final, one the client cut the stream before receiving); together
    they hold every pushed sample exactly once."""
    kept = bytearray()
    for before, after in itertools.pairwise(streams):
        kept += before.audio[: _start_of(after, before, exact)]
    kept += streams[-1].audio
    # The session adds silence at turn ends: compare the sound, sample for sample.
    sound, said = _samples(bytes(kept)), _samples(bytes(pushed))
    assert np.array_equal(sound[sound != 0], said[said != 0])


def _start_of(after: RecordedStream, before: RecordedStream, exact: bool) -> int:
    """Where `after`'s audio begins in `before`'s: at the last final end of `before` (or an earlier one)."""
    ends = sorted({0, *(end for _, end in before.finals)}, reverse=True)
    for end in ends[:1] if exact else ends:
        rest = bytes(before.audio[end:])
        if not _samples(rest).any():
            return end  # nothing but silence was left to send again
        start = end + _leading_silence(rest) - _leading_silence(bytes(after.audio))
        overlap = min(len(before.audio) - start, len(after.audio))
        if start >= 0 and before.audio[start : start + overlap] == after.audio[:overlap]:
            return start
    raise AssertionError("a stream does not go on from where the one before it was finalised")


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2")


def _leading_silence(pcm: bytes) -> int:
    sound = np.flatnonzero(_samples(pcm))
    return int(sound[0]) * 2 if sound.size else len(pcm)


# --- the stream's shape -----------------------------------------------------------------------


async def test_config_goes_first_then_audio_in_messages_of_at_most_25600_bytes(fake: FakeSpeech) -> None:
    async with call_on(fake) as call:
        pcm = speech_pcm("alpha bravo charlie", "delta echo")
        call.session.push(pcm)  # one large push is split by the engine
        call.pushed += pcm
        transcript = await call.session.finish_turn()
    assert transcript is not None and transcript.text == "alpha bravo charlie delta echo"
    stream = fake.streams[0]
    assert stream.kinds[0] == "streaming_config" and set(stream.kinds[1:]) == {"audio"}
    assert stream.config is not None
    assert stream.config.recognizer == f"projects/{PROJECT}/locations/global/recognizers/_"
    config = stream.config.streaming_config.config
    decoding = config.explicit_decoding_config
    assert decoding.encoding == cloud_speech.ExplicitDecodingConfig.AudioEncoding.LINEAR16
    assert (decoding.sample_rate_hertz, decoding.audio_channel_count) == (16000, 1)
    assert (config.model, list(config.language_codes)) == ("long", ["en-US"])
    assert stream.config.streaming_config.streaming_features.interim_results
    assert max(stream.sizes) == MAX_AUDIO_BYTES and len(pcm) > MAX_AUDIO_BYTES
    assert bytes(stream.audio).startswith(pcm) and not any(stream.audio[len(pcm) :])  # then the turn's silence


async def test_audio_pushed_20_ms_at_a_time_goes_in_messages_of_100_ms_and_a_turn_end_sends_the_rest(fake: FakeSpeech) -> None:
    from agent_bridge.google_stt_stream import MIN_AUDIO_BYTES

    async with call_on(fake, turn_end_silence_ms=30) as call:
        await call.say(speech_pcm("alpha bravo charlie"))
        await asyncio.sleep(0.2)
        stream = fake.streams[0]
        if len(stream.audio) == len(call.pushed):  # the last message took it all: 20 ms more to hold back
            await call.say(bytes(CHUNK))
            await asyncio.sleep(0.2)
        # Every message so far carries at least 100 ms; what is left waits for more audio.
        assert stream.sizes and min(stream.sizes) >= MIN_AUDIO_BYTES
        assert 0 < len(call.pushed) - len(stream.audio) < MIN_AUDIO_BYTES
        transcript = await call.session.finish_turn()
    assert transcript is not None and transcript.text == "alpha bravo charlie"
    # The turn's end sent the rest and its 30 ms of silence at once, though less than 100 ms.
    assert bytes(stream.audio) == bytes(call.pushed) + bytes(30 * BYTES_PER_MS)
    assert stream.sizes[-1] < MIN_AUDIO_BYTES


async def test_the_fake_refuses_what_the_service_refuses(fake: FakeSpeech) -> None:
    channel = grpc.aio.insecure_channel(fake.endpoint)
    client = SpeechAsyncClient(transport=SpeechGrpcAsyncIOTransport(host=fake.endpoint, channel=channel))
    config = GoogleSpeechToText(settings_for(fake)).config_request
    try:
        for requests, why in (
            ([cloud_speech.StreamingRecognizeRequest(audio=b"\0\0")], "recognizer and streaming_config"),
            (
                [config, cloud_speech.StreamingRecognizeRequest(audio=bytes(MAX_AUDIO_BYTES + 2))],
                "maximum of 25600 bytes",
            ),
            ([config, config], "only audio"),
        ):
            call = await client.streaming_recognize(requests=_iterate(requests))
            with pytest.raises(api_exceptions.InvalidArgument, match=why):
                async for _ in call:
                    pass
    finally:
        await channel.close()


async def _iterate(
    items: list[cloud_speech.StreamingRecognizeRequest],
) -> AsyncIterator[cloud_speech.StreamingRecognizeRequest]:
    for item in items:
        yield item


# --- transcripts ------------------------------------------------------------------------------


async def test_interim_results_then_the_final_transcript(fake: FakeSpeech) -> None:
    async with call_on(fake) as call:
        transcript = await call.turn("alpha bravo charlie")
        second = await call.turn("delta echo")
    assert [t.text for t in call.interims] == ["alpha", "alpha bravo", "alpha bravo charlie", "delta", "delta echo"]
    assert not any(t.final for t in call.interims)
    first_ms = len(speech_pcm("alpha bravo charlie")) // BYTES_PER_MS
    assert transcript == Transcript("alpha bravo charlie", final=True, start_ms=0, end_ms=first_ms)
    assert second is not None and (second.text, second.start_ms) == ("delta echo", first_ms)
    assert second.end_ms == len(call.pushed) // BYTES_PER_MS  # the added silences take no time on the session clock


async def test_text_the_service_finalises_within_a_turn_is_joined(fake: FakeSpeech) -> None:
    async with call_on(fake) as call:
        transcript = await call.turn("alpha bravo", "charlie delta", "echo")
    assert transcript is not None and transcript.text == "alpha bravo charlie delta echo"
    assert fake.finals() == ["alpha bravo", "charlie delta", "echo"]


async def test_a_turn_without_speech_gives_none(fake: FakeSpeech) -> None:
    async with call_on(fake, final_wait_s=0.2) as call:
        await call.say(silence(300))
        assert await call.session.finish_turn() is None
        assert await call.session.finish_turn() is None  # nothing pushed at all
        assert texts([await call.turn("alpha")]) == ["alpha"]


async def test_reset_forgets_the_turn_so_far(fake: FakeSpeech) -> None:
    async with call_on(fake) as call:
        await call.say(speech_pcm("alpha bravo"))
        call.session.reset()
        transcript = await call.turn("charlie")
        assert transcript is not None and transcript.text == "charlie"
        # A reset while an earlier turn still waits for its final leaves that turn its words.
        await call.say(speech_pcm("delta echo"))
        closing = asyncio.ensure_future(call.session.finish_turn())
        await call.say(speech_pcm("foxtrot"))
        call.session.reset()
        assert texts([await closing, await call.turn("golf")]) == ["delta echo", "golf"]


async def test_finish_turn_waits_a_bounded_time_then_takes_the_last_interim(fake: FakeSpeech) -> None:
    fake.final_delay_s = 3.0  # the service is slow to finalise
    async with call_on(fake, final_wait_s=0.3) as call:
        await call.say(speech_pcm("alpha bravo charlie"))
        started = time.perf_counter()
        transcript = await call.session.finish_turn()
        waited = time.perf_counter() - started
        assert transcript is not None and transcript.text == "alpha bravo charlie"
        assert 0.25 < waited < 2.0
        fake.final_delay_s = 0.0
        # The late final of the first turn must not come back inside the next one.
        assert texts([await call.turn("delta echo")]) == ["delta echo"]
        assert call.session.streams_opened == 2


# --- endless streaming ------------------------------------------------------------------------

PHRASES = ("alpha bravo charlie", "delta echo foxtrot", "golf hotel india juliett")


async def test_streams_roll_over_at_the_service_limit_without_losing_or_repeating_audio(fake: FakeSpeech) -> None:
    fake.max_stream_ms = 2500  # the service's five minutes, shortened
    async with call_on(fake) as call:
        said = [await call.turn(phrase) for phrase in PHRASES]
        said.append(await call.turn("kilo lima", "alpha"))
        billed = await _settled_billing(call.session, fake)
    assert texts(said) == [*PHRASES, "kilo lima alpha"]
    assert fake.finals() == [*PHRASES, "kilo lima", "alpha"]  # each recognised to the end once, none twice
    assert [s.status for s in fake.streams].count("ABORTED") >= 2
    # Times stay on the session's clock across streams: each turn starts where the last ended.
    ends = np.cumsum(
        [len(speech_pcm(p)) // BYTES_PER_MS for p in PHRASES] + [len(speech_pcm("kilo lima", "alpha")) // BYTES_PER_MS]
    )
    assert [(t.start_ms, t.end_ms) for t in said if t] == list(zip([0, *ends[:-1]], ends))
    assert_streams_tile_the_audio(fake.streams, call.pushed)
    assert billed == sum(s.billed_ms for s in fake.streams) > len(call.pushed) // BYTES_PER_MS


async def test_streams_roll_over_before_the_service_limit(fake: FakeSpeech) -> None:
    fake.max_stream_ms = 2500
    async with call_on(fake, rollover_after_s=1.5) as call:
        said = [await call.turn(phrase) for phrase in PHRASES]
    assert texts(said) == list(PHRASES)
    assert len(fake.streams) >= 3 and "ABORTED" not in [s.status for s in fake.streams]
    assert sorted(fake.finals()) == sorted(PHRASES)  # each finalised once: nothing resent after its final
    assert_streams_tile_the_audio(fake.streams, call.pushed, exact=False)


async def test_streams_roll_over_on_time_while_audio_comes_in_real_time(fake: FakeSpeech) -> None:
    fake.max_stream_ms = 1500
    async with call_on(fake, rollover_after_s=0.5) as call:
        said = []
        for phrase in ("alpha bravo charlie", "delta echo"):
            pcm = speech_pcm(phrase, "foxtrot")
            for offset in range(0, len(pcm), CHUNK):  # 20 ms every 20 ms, as a call's audio comes
                call.session.push(pcm[offset : offset + CHUNK])
                call.pushed += pcm[offset : offset + CHUNK]
                await asyncio.sleep(0.02)
            said.append(await call.session.finish_turn())
            await asyncio.sleep(0.3)  # the bot answers: nothing is pushed
    assert texts(said) == ["alpha bravo charlie foxtrot", "delta echo foxtrot"] and not call.errors
    assert len(fake.streams) >= 3 and "ABORTED" not in [s.status for s in fake.streams]
    assert_streams_tile_the_audio(fake.streams, call.pushed, exact=False)


async def test_a_stream_that_expires_without_finalising_anything_counts_as_a_failure(fake: FakeSpeech) -> None:
    fake.max_stream_ms = 300  # shorter than any phrase: no stream ever reaches a final
    async with call_on(fake, max_retries=2) as call:
        await call.say(speech_pcm("alpha bravo charlie"))
        with pytest.raises(EngineError, match="Max duration"):
            await call.session.finish_turn()
    assert len(fake.streams) <= 5  # the first, then three with the turn's audio: no storm of streams


# --- faults -----------------------------------------------------------------------------------


async def test_the_stream_opens_with_the_session_and_is_reopened_after_the_service_closes_it_idle(
    fake: FakeSpeech,
) -> None:
    fake.inject(Fault("refuse", code=grpc.StatusCode.OUT_OF_RANGE))  # "Audio Timeout": idle too long
    async with call_on(fake) as call:
        for _ in range(100):
            if fake.streams and fake.streams[0].status != "OK":
                break
            await asyncio.sleep(0.01)
        assert [(s.kinds, s.status) for s in fake.streams] == [(["streaming_config"], "OUT_OF_RANGE")]
        assert texts([await call.turn("alpha bravo")]) == ["alpha bravo"]
    assert len(fake.streams) == 2 and not call.errors


@pytest.mark.parametrize("kind", ["unavailable", "internal", "drop"])
async def test_a_failed_stream_is_replaced_and_its_audio_sent_again(fake: FakeSpeech, kind: str) -> None:
    fake.inject(Fault(kind, after_ms=500))  # in the middle of "charlie"
    async with call_on(fake) as call:
        said = [await call.turn("alpha bravo charlie"), await call.turn("delta echo")]
    assert texts(said) == ["alpha bravo charlie", "delta echo"] and not call.errors
    failed = fake.streams[0]
    assert failed.status == {"unavailable": "UNAVAILABLE", "internal": "INTERNAL", "drop": "OK"}[kind]
    assert not failed.finals and fake.streams[1].audio.startswith(failed.audio[: failed.recognised])
    assert fake.finals() == ["alpha bravo charlie", "delta echo"]
    assert_streams_tile_the_audio(fake.streams, call.pushed)


async def test_the_error_surfaces_once_retries_are_exhausted_and_the_next_turn_recovers(fake: FakeSpeech) -> None:
    fake.inject(Fault("refuse", code=grpc.StatusCode.UNAVAILABLE), times=None)
    async with call_on(fake, max_retries=2, backoff_s=0.2) as call:
        await call.say(speech_pcm("alpha bravo"))
        with pytest.raises(EngineError, match="UNAVAILABLE") as raised:
            await call.session.finish_turn()
        assert "3 attempt" in str(raised.value)
        assert call.errors == [raised.value]
        fake.clear_faults()
        assert texts([await call.turn("charlie delta")]) == ["charlie delta"]


async def test_a_refusal_that_retrying_cannot_fix_surfaces_at_once(fake: FakeSpeech) -> None:
    fake.inject(Fault("refuse", code=grpc.StatusCode.PERMISSION_DENIED), times=None)
    async with call_on(fake, max_retries=5, backoff_s=0.2) as call:
        await call.say(speech_pcm("alpha"))
        with pytest.raises(EngineError, match="PERMISSION_DENIED.*the fake was told to refuse"):
            await call.session.finish_turn()
        refused_with_audio = [s for s in fake.streams if len(s.kinds) > 1 or s.audio]
        assert len(fake.streams) <= 3 and len(refused_with_audio) <= 1


# --- metering, settings, lifecycle -------------------------------------------------------------


async def _settled_billing(session: GoogleSpeechSession, fake: FakeSpeech) -> int:
    """The session's billed total once the responses in flight have arrived."""
    deadline = time.perf_counter() + 2.0
    while session.audio_ms_transcribed != sum(s.billed_ms for s in fake.streams) and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    return session.audio_ms_transcribed


async def test_the_billed_duration_is_metered(fake: FakeSpeech) -> None:
    async with call_on(fake) as call:
        assert call.session.audio_ms_transcribed == 0
        await call.turn("alpha bravo")
        first = await _settled_billing(call.session, fake)
        await call.turn("charlie")
        second = await _settled_billing(call.session, fake)
    assert 0 < first < second == fake.streams[0].billed_ms
    assert second >= len(call.pushed) // BYTES_PER_MS  # the pushed audio, and some of the added silence


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({}, "GOOGLE_CLOUD_PROJECT must be set"),
        ({"GOOGLE_CLOUD_PROJECT": "Not A Project"}, "GOOGLE_CLOUD_PROJECT"),
        ({"GOOGLE_SPEECH_ENDPOINT": "localhost"}, "GOOGLE_SPEECH_ENDPOINT must be host:port"),
        ({"GOOGLE_SPEECH_LOCATION": "Europe West"}, "GOOGLE_SPEECH_LOCATION"),
        ({"GOOGLE_SPEECH_RECOGNIZER": "recognizers/mine"}, "GOOGLE_SPEECH_RECOGNIZER must be"),
        (
            {"GOOGLE_SPEECH_RECOGNIZER": "projects/p/locations/eu/recognizers/r", "GOOGLE_SPEECH_LOCATION": "us"},
            "GOOGLE_SPEECH_RECOGNIZER is in location 'eu' but GOOGLE_SPEECH_LOCATION is 'us'",
        ),
        ({"GOOGLE_SPEECH_LANGUAGE": "en_US!"}, "GOOGLE_SPEECH_LANGUAGE"),
        ({"GOOGLE_API_INSECURE": "maybe"}, "GOOGLE_API_INSECURE"),
    ],
)
async def test_bad_settings_fail_at_start_naming_the_variable(environ: dict[str, str], problem: str) -> None:
    environ = {"STT_ENGINE": "google", "GOOGLE_CLOUD_PROJECT": PROJECT, **environ}
    if environ["GOOGLE_CLOUD_PROJECT"] == PROJECT and problem.startswith("GOOGLE_CLOUD_PROJECT must"):
        del environ["GOOGLE_CLOUD_PROJECT"]
    with pytest.raises(ValueError, match=problem) as raised:
        build_engines(EngineConfig.from_env(environ))
    assert "\n" not in str(raised.value)


async def test_settings_defaults_follow_the_location() -> None:
    def settings(**environ: str) -> GoogleSpeechSettings:
        return GoogleSpeechSettings.from_config(EngineConfig.from_env({"GOOGLE_CLOUD_PROJECT": PROJECT, **environ}))

    default = settings()
    assert (default.location, default.endpoint, default.model, default.language, default.insecure) == (
        "global",
        "speech.googleapis.com:443",
        "long",
        "en-US",
        False,
    )
    assert default.recognizer == f"projects/{PROJECT}/locations/global/recognizers/_"
    regional = settings(GOOGLE_SPEECH_LOCATION="eu")
    assert (regional.endpoint, regional.recognizer) == (
        "eu-speech.googleapis.com:443",
        f"projects/{PROJECT}/locations/eu/recognizers/_",
    )
    named = settings(GOOGLE_SPEECH_RECOGNIZER="projects/p/locations/us-central1/recognizers/calls")
    assert (named.location, named.endpoint) == ("us-central1", "us-central1-speech.googleapis.com:443")
    chosen = settings(
        GOOGLE_SPEECH_MODEL="chirp_2", GOOGLE_SPEECH_LANGUAGE="de-DE", GOOGLE_SPEECH_ENDPOINT="127.0.0.1:9000"
    )
    assert (chosen.model, chosen.language, chosen.endpoint) == ("chirp_2", "de-DE", "127.0.0.1:9000")


async def test_the_registry_builds_the_engine_that_talks_to_the_fake(fake: FakeSpeech) -> None:
    config = EngineConfig.from_env(
        {
            "STT_ENGINE": "google",
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "GOOGLE_SPEECH_ENDPOINT": fake.endpoint,
            "GOOGLE_API_INSECURE": "1",
        }
    )
    engines = build_engines(config)
    try:
        assert isinstance(engines.stt, GoogleSpeechToText) and engines.stt.name == "google"
        await engines.stt.warm_up()  # type: ignore[attr-defined]
        session = engines.stt.open_session(lambda _: None)
        pcm = speech_pcm("hotel india")
        session.push(pcm)
        transcript = await session.finish_turn()
        await session.aclose()
        assert transcript is not None and transcript.text == "hotel india"
    finally:
        await engines.aclose()


async def test_closing_leaves_no_task_or_thread_behind(fake: FakeSpeech) -> None:
    engine = GoogleSpeechToText(settings_for(fake), StreamTuning(backoff_s=0.01))
    await engine.warm_up()
    warm = await _session_round(engine)  # the first call starts gRPC's own threads, once per process
    threads = threading.active_count()
    for _ in range(3):
        assert await _session_round(engine) == warm
        assert not [task for task in asyncio.all_tasks() if task.get_name().startswith("google-stt")]
    assert threading.active_count() <= threads
    await engine.aclose()
    with pytest.raises(EngineError, match="closed"):
        engine.open_session(lambda _: None)


async def _session_round(engine: GoogleSpeechToText) -> str | None:
    session = engine.open_session(lambda _: None)
    session.push(speech_pcm("juliett"))
    transcript = await session.finish_turn()
    await session.aclose()
    with pytest.raises(EngineError, match="closed"):
        session.push(b"\0\0")
    return transcript.text if transcript else None
