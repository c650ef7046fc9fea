"""GET /api/v1/usage/daily: a real call's metered seconds land on today's UTC day, with the month's limits."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import aiohttp
import pytest

from storage.database import Database
from storage.quotas import QuotaRepository
from storage.sessions import SessionRepository
from storage.usage import USAGE_TYPES, MeterReading, UsageRepository
from storage.usage_daily import DailyUsageRepository
from storage.users import UserRepository
from tests.conftest import RunningServer
from tests.rtc_client import PcmSourceTrack, RtcClient, sine

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECOND = 1_000_000  # µs


async def db_today(database: Database) -> date:
    return await database.pool.fetchval("select (now() at time zone 'UTC')::date")


async def daily(http: aiohttp.ClientSession, server: RunningServer, headers: dict[str, str]) -> dict:  # type: ignore[type-arg]
    async with http.get(f"{server.base_url}/api/v1/usage/daily", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_a_calls_seconds_appear_under_today_with_limits(
    loopback_server: RunningServer, database: Database, http: aiohttp.ClientSession
) -> None:
    user = f"daily-{uuid.uuid4().hex[:8]}"
    await QuotaRepository(database.pool).set_limits(user, {"mic_audio_seconds": 600 * SECOND})
    client = RtcClient(loopback_server.base_url, loopback_server.token(user), source=PcmSourceTrack(sine(440, 2.0), end_when_done=True))
    await client.connect(http)
    await client.wait_connected()
    while not client.source.done:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    await client.hangup(http)

    body = await daily(http, loopback_server, client.headers)
    today = await db_today(database)
    assert body["user_id"] == user
    assert body["period_start"] == today.replace(day=1).isoformat()
    # Every day of the month up to today, in order, and nothing after today.
    expected_days = [(today.replace(day=1) + timedelta(days=n)).isoformat() for n in range(today.day)]
    assert body["days"] == expected_days
    assert set(body["usage"]) == set(USAGE_TYPES)
    for entry in body["usage"].values():
        assert len(entry["daily"]) == len(expected_days)

    mic, speech = body["usage"]["mic_audio_seconds"], body["usage"]["speech_audio_seconds"]
    assert mic["unit"] == "seconds" and body["usage"]["tts_characters"]["unit"] == "characters"
    # The override and the free plan's limits, in seconds; agent tokens are unlimited.
    assert mic["limit"] == 600
    assert speech["limit"] == 3600
    assert body["usage"]["agent_tokens"]["limit"] is None
    # The call's two seconds are today's, and only today's; they match the month's ledger exactly.
    assert 1.9 <= mic["daily"][-1] <= 2.2, mic
    assert 0 < speech["daily"][-1] <= mic["daily"][-1] + 0.1, speech
    assert sum(mic["daily"][:-1]) == 0 and sum(speech["daily"][:-1]) == 0
    used = await database.pool.fetchval(
        "select used from usage_ledger where user_id = $1 and usage_type = 'mic_audio_seconds' and period = $2",
        user,
        today.replace(day=1),
    )
    assert mic["daily"][-1] == used / SECOND

    # Another user sees none of it.
    other = await daily(http, loopback_server, loopback_server.auth())
    assert other["usage"]["mic_audio_seconds"]["daily"][-1] == 0


async def test_the_route_needs_a_token(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{loopback_server.base_url}/api/v1/usage/daily") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"
    async with http.get(f"{loopback_server.base_url}/api/v1/usage/daily", headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 401


async def test_trigger_counts_rises_only_and_keeps_them_in_the_ledgers_month(database: Database) -> None:
    user = f"daily-{uuid.uuid4().hex[:8]}"
    await UserRepository(database.pool).ensure(user)
    call = await SessionRepository(database.pool).create(user, 300, "node-daily")
    usage, quotas = UsageRepository(database.pool), QuotaRepository(database.pool)
    today = await db_today(database)

    def mic(amount: int) -> MeterReading:
        return MeterReading(call.id, user, "mic", "audio", "inbound", "mic_audio_seconds", amount)

    # Reserving touches `reserved` only: no day counts it.
    assert await quotas.reserve(call.id, user, "mic_audio_seconds", 5 * SECOND) == 5 * SECOND
    await usage.flush([mic(3 * SECOND)])
    await usage.flush([mic(3 * SECOND)])  # a retried flush raises nothing, so counts nothing
    await usage.flush([mic(4 * SECOND)])
    await quotas.release(call.id)
    rows = await database.pool.fetch("select day, usage_type, amount from usage_daily where user_id = $1", user)
    assert [(r["day"], r["usage_type"], r["amount"]) for r in rows] == [(today, "mic_audio_seconds", 4 * SECOND)]

    # A flush written for last month (a call across a month's end) stays in last month, on its last day.
    last_month_end = today.replace(day=1) - timedelta(days=1)
    when = datetime(last_month_end.year, last_month_end.month, 15, 12, tzinfo=UTC)
    await usage.flush([mic(6 * SECOND)], now=when)
    last = await DailyUsageRepository(database.pool).month(user, now=when)
    assert last.period_start == last_month_end.replace(day=1)
    assert last.days[-1] == date(when.year, when.month, 15)  # "today" of that `now`
    assert sum(last.daily["mic_audio_seconds"]) == 0  # stored on the month's last day, after the 15th
    stored = await database.pool.fetchval(
        "select amount from usage_daily where user_id = $1 and day = $2", user, last_month_end
    )
    assert stored == 2 * SECOND
    this = await DailyUsageRepository(database.pool).month(user)
    assert this.daily["mic_audio_seconds"][-1] == 4 * SECOND
    assert sum(this.daily["mic_audio_seconds"]) == 4 * SECOND
