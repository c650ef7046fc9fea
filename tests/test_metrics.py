"""GET /metrics over real HTTP: the token, and what real calls, refusals and voice turns put in it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from signaling import keys
from signaling.limits import Limits
from storage.database import Database
from tests.conftest import RunningServer, server_settings, start_server
from tests.rtc_client import RtcClient, sine
from tests.speech import utterance, with_silence
from tests.test_voice_loop import EventLog

pytestmark = pytest.mark.asyncio(loop_scope="session")

P = "voice_avatar_"


class Scrape:
    """One scrape's samples, by sample name and labels."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for a labelled sample not seen yet (a counter that has not counted)."""
        for sample in self.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        if labels:
            return 0.0
        raise AssertionError(f"no sample {name} in the scrape")


async def scrape(server: RunningServer, http: aiohttp.ClientSession, token: str | None = None) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(server.base_url + "/metrics", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/plain"
        return Scrape(await resp.text())


async def eventually(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await check()
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_metrics_need_the_token_when_one_is_set(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    runner, server = await start_server(server_settings(database, tmp_path, metrics_token="metrics-secret-123"))
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {server.token()}"},
                        {"Authorization": "Bearer métrics"}):  # fmt: skip
            async with http.get(server.base_url + "/metrics", headers=headers) as resp:
                assert resp.status == 401, headers
                assert (await resp.json())["error"]["code"] == "unauthorized"
        result = await scrape(server, http, "metrics-secret-123")
        assert P + "live_calls" in result.families
    finally:
        await runner.cleanup()


async def test_a_call_shows_in_live_calls_sessions_and_setup_time(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    before = await scrape(loopback_server, http)  # no METRICS_TOKEN on this server: open
    # Relative to before: the server is shared with other test files, whose calls may still be ending.
    live_before = before.value(P + "live_calls")
    client = RtcClient(loopback_server.base_url, loopback_server.token())
    await client.create_session(http)
    created = await scrape(loopback_server, http)
    assert created.value(P + "sessions_created_total") == before.value(P + "sessions_created_total") + 1
    client.source.play(sine(440, 10))
    await client.connect(http)
    await client.wait_connected()

    async def connected() -> None:
        during = await scrape(loopback_server, http)
        assert during.value(P + "live_calls") == live_before + 1
        assert during.value(P + "call_setup_seconds_count") == before.value(P + "call_setup_seconds_count") + 1
        assert during.value(P + "call_answer_seconds_count") == before.value(P + "call_answer_seconds_count") + 1
        assert 0 < during.value(P + "call_setup_seconds_sum") - before.value(P + "call_setup_seconds_sum") < 10

    await eventually(connected)
    # An engine's failure, as the voice pipeline publishes it on the call's bus, is counted by engine.
    call = loopback_server.app[keys.CALLS].get(uuid.UUID(client.session_id))
    assert call is not None
    call.events.publish("error", code="tts_failed", message="synthetic")
    call.events.publish("engine_fallback", kind="tts", engine="piper")
    await client.hangup(http)

    after = await scrape(loopback_server, http)
    assert after.value(P + "live_calls") == live_before
    assert after.value(P + "calls_ended_total", reason="hangup") == before.value(P + "calls_ended_total", reason="hangup") + 1
    assert after.value(P + "engine_errors_total", engine="tts") == before.value(P + "engine_errors_total", engine="tts") + 1
    assert after.value(P + "call_errors_total", code="tts_failed") == before.value(P + "call_errors_total", code="tts_failed") + 1
    assert after.value(P + "engine_fallbacks_total", kind="tts", engine="piper") == (
        before.value(P + "engine_fallbacks_total", kind="tts", engine="piper") + 1
    )
    # The meters were flushed while the call ran (once a second and at its end), recently.
    assert after.value(P + "usage_flush_seconds_count") > before.value(P + "usage_flush_seconds_count")
    assert after.value(P + "usage_flush_lag_seconds") < 5
    # Read at scrape time from the shared outbound frame clock.
    assert after.value(P + "outbound_frames_late_total") >= 0


async def test_a_refused_session_counts_its_reason(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    user_id = f"refused-{uuid.uuid4().hex[:8]}"
    admin = {"Authorization": f"Bearer {loopback_server.token(admin=True)}"}
    limits = {"mic_audio_seconds": 0, "speech_audio_seconds": 0, "stt_seconds": 0, "tts_characters": 0, "agent_tokens": 0}
    async with http.put(f"{loopback_server.base_url}/api/v1/admin/users/{user_id}/quota", json={"limits": limits}, headers=admin) as resp:
        assert resp.status == 200, await resp.text()
    before = await scrape(loopback_server, http)
    user = {"Authorization": f"Bearer {loopback_server.token(user_id)}"}
    async with http.post(f"{loopback_server.base_url}/api/v1/sessions", json={}, headers=user) as resp:
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "quota_exceeded"
    after = await scrape(loopback_server, http)
    refused = P + "sessions_refused_total"
    assert after.value(refused, reason="quota_exceeded") == before.value(refused, reason="quota_exceeded") + 1
    route = "POST /api/v1/sessions"
    assert after.value(P + "quota_refusals_total", route=route) == before.value(P + "quota_refusals_total", route=route) + 1
    assert after.value(P + "sessions_created_total") == before.value(P + "sessions_created_total")
    # A malformed request is not a refusal.
    async with http.post(f"{loopback_server.base_url}/api/v1/sessions", json={"avatar": "yes"}, headers=admin) as resp:
        assert resp.status == 400
    assert (await scrape(loopback_server, http)).value(refused, reason="invalid_avatar") == 0


async def test_limits_count_as_refusals(database: Database, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """One open session per user, four /api/v1 requests a minute: too_many_calls, then the rate limiter's 429."""
    limits = Limits(max_calls_per_user=1, rate_limit_sessions_per_minute=0, rate_limit_requests_per_minute=4)
    runner, server = await start_server(server_settings(database, tmp_path, limits=limits))
    try:
        headers = server.auth()
        codes = []
        for _ in range(5):
            async with http.post(server.base_url + "/api/v1/sessions", json={}, headers=headers) as resp:
                codes.append(resp.status if resp.status == 201 else (await resp.json())["error"]["code"])
        assert codes == [201, "too_many_calls", "too_many_calls", "too_many_calls", "rate_limited"]
        result = await scrape(server, http)  # /metrics is not under /api/v1: never rate limited
        assert result.value(P + "sessions_created_total") == 1
        assert result.value(P + "sessions_refused_total", reason="too_many_calls") == 3
        assert result.value(P + "sessions_refused_total", reason="rate_limited") == 1
    finally:
        await runner.cleanup()


async def test_event_loop_lag_is_measured(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    first = await scrape(loopback_server, http)
    await asyncio.sleep(1.2)
    second = await scrape(loopback_server, http)
    assert 0 <= second.value(P + "event_loop_lag_seconds") < 1
    assert second.value(P + "event_loop_oversleep_seconds_count") >= first.value(P + "event_loop_oversleep_seconds_count") + 2


async def test_a_voice_turn_fills_the_latency_histograms(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    before = await scrape(voice_server, http)
    client = RtcClient(voice_server.base_url, voice_server.token())
    await client.create_session(http)
    log = EventLog()
    await log.open(http, voice_server, client)
    try:
        await client.connect(http)
        await client.wait_connected()
        await log.wait_for("state", state="connected")
        client.source.play(with_silence(utterance("Hello, what time is it?")))
        turn = await log.wait_for("turn_metrics", timeout=30)
        after = await scrape(voice_server, http)
    finally:
        log.close()
        await client.hangup(http)
    assert turn["voice_to_voice_ms"] is not None
    count = P + "turn_voice_to_voice_seconds_count"
    assert after.value(count) == before.value(count) + 1
    total = after.value(P + "turn_voice_to_voice_seconds_sum") - before.value(P + "turn_voice_to_voice_seconds_sum")
    assert total == pytest.approx(int(turn["voice_to_voice_ms"]) / 1000)  # type: ignore[call-overload]
    for stage, field in (("stt", "stt_ms"), ("agent_first_text", "agent_first_text_ms"), ("tts_first_audio", "tts_first_audio_ms")):
        if turn[field] is not None:
            name = P + "turn_stage_seconds_count"
            assert after.value(name, stage=stage) == before.value(name, stage=stage) + 1, stage
