"""Metering, the usage ledger, quotas and node reaping against a real Postgres."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from storage.avatar_usage import AvatarSessionRepository
from storage.database import Database, open_database
from storage.nodes import NodeRepository
from storage.quotas import QuotaRepository
from storage.sessions import SessionRecord, SessionRepository
from storage.usage import TIME_USAGE_TYPES, USAGE_TYPES, MeterReading, UsageRepository
from storage.users import UserRepository

pytestmark = pytest.mark.asyncio(loop_scope="session")

MIC = "mic_audio_seconds"
SECOND = 1_000_000  # µs


def new_user(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def new_call(database: Database, user_id: str, node_id: str = "node-test") -> SessionRecord:
    await UserRepository(database.pool).ensure(user_id)
    return await SessionRepository(database.pool).create(user_id, 300, node_id)


def mic(call: SessionRecord, amount: int) -> MeterReading:
    return MeterReading(call.id, call.user_id, "mic", "audio", "inbound", MIC, amount)


async def ledger(database: Database, user_id: str, usage_type: str = MIC) -> list[tuple[date, int, int]]:
    rows = await database.pool.fetch(
        "select period, used, reserved from usage_ledger where user_id = $1 and usage_type = $2 order by period",
        user_id,
        usage_type,
    )
    return [(r["period"], r["used"], r["reserved"]) for r in rows]


async def held(database: Database, session_id: uuid.UUID, usage_type: str = MIC) -> int | None:
    return await database.pool.fetchval(
        "select reserved from quota_reservations where session_id = $1 and usage_type = $2", session_id, usage_type
    )


@pytest.fixture
async def second_pool(database: Database, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    """Another server process's connections to the same database."""
    other = await open_database(database.url, tmp_path, migrate=False)
    yield other.pool
    await other.close()


async def test_usage_types_are_the_product_ones() -> None:
    assert USAGE_TYPES == (
        "mic_audio_seconds", "speech_audio_seconds", "avatar_video_seconds", "stt_seconds", "tts_characters", "agent_tokens",
    )
    assert TIME_USAGE_TYPES == ("mic_audio_seconds", "speech_audio_seconds", "avatar_video_seconds", "stt_seconds")


async def test_flush_is_monotonic_and_bills_the_sum_of_increases(database: Database) -> None:
    usage = UsageRepository(database.pool)
    call = await new_call(database, new_user())
    connected = MeterReading(call.id, call.user_id, "connected", "time", "none", None, 0)
    amounts = [20_000, 1_020_000, 1_020_000, 980_000, 2_500_001, 3_000_000, 2_999_999]
    for amount in amounts:
        await usage.flush([mic(call, amount), MeterReading(**{**connected.__dict__, "amount": amount * 2})])
    # A lower value is ignored, the same value twice adds nothing: the ledger is the sum of rises.
    assert [(r.meter, r.amount) for r in await usage.session_meters(call.id)] == [("connected", 6_000_000), ("mic", 3_000_000)]
    assert await usage.flush([mic(call, 2_000_000)]) == 0  # stale: nothing written
    [(_, used, reserved)] = await ledger(database, call.user_id)
    assert (used, reserved) == (3_000_000, 0)
    assert (await usage.period_usage(call.user_id))[MIC].used == 3_000_000
    # Meters without a usage type are stored but never billed.
    assert await database.pool.fetchval("select count(*) from usage_ledger where user_id = $1", call.user_id) == 1


async def test_flush_of_an_empty_batch_writes_nothing(database: Database) -> None:
    assert await UsageRepository(database.pool).flush([]) == 0


async def test_flush_only_writes_readings_of_sessions_of_their_user(database: Database) -> None:
    usage = UsageRepository(database.pool)
    call = await new_call(database, new_user())
    foreign = MeterReading(call.id, new_user("mallory"), "mic", "audio", "inbound", MIC, 5 * SECOND)
    missing = MeterReading(uuid.uuid4(), call.user_id, "mic", "audio", "inbound", MIC, 5 * SECOND)
    assert await usage.flush([foreign, missing, mic(call, SECOND)]) == 1
    assert [(r.meter, r.amount) for r in await usage.session_meters(call.id)] == [("mic", SECOND)]
    with pytest.raises(ValueError):
        await usage.flush([MeterReading(call.id, call.user_id, "mic", "audio", "inbound", "mic_seconds", 1)])
    with pytest.raises(ValueError):
        await usage.flush([mic(call, -1)])


async def test_many_readings_go_in_one_statement(database: Database) -> None:
    statements: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda logged: statements.append(logged.query))

    def ours() -> list[str]:
        # Leaves out what the pool sends on its own when a connection goes back (RESET ALL, ...).
        return [q for q in statements if "RESET ALL" not in q]

    pool = await asyncpg.create_pool(database.url, min_size=1, max_size=1, init=log_queries)
    try:
        usage = UsageRepository(pool)
        user = new_user()
        calls = [await new_call(database, user) for _ in range(250)]
        readings = [
            MeterReading(call.id, user, meter, "audio", "inbound", MIC if meter == "mic" else None, step * 40_000)
            for step in (1, 2)
            for call in calls
            for meter in ("mic", "speech", "video", "connected")
        ]
        await usage.flush([mic(calls[0], 1)])  # asyncpg looks up the array types once per connection
        statements.clear()
        assert await usage.flush(readings[:1_000]) == 1_000
        assert len(ours()) == 1 and "unnest(" in ours()[0]
        # Two readings of one meter in one batch count once, at the higher amount.
        statements.clear()
        assert await usage.flush(readings) == 1_000
        assert len(ours()) == 1
    finally:
        await pool.close()
    [(_, used, _)] = await ledger(database, user)
    assert used == 250 * 80_000


async def test_a_flush_retried_after_a_lost_acknowledgement_changes_nothing(database: Database) -> None:
    usage, quotas = UsageRepository(database.pool), QuotaRepository(database.pool)
    call = await new_call(database, new_user())
    assert await quotas.reserve(call.id, call.user_id, MIC, 10 * SECOND) == 10 * SECOND
    await usage.flush([mic(call, 2 * SECOND)])
    batch = [mic(call, 3 * SECOND), MeterReading(call.id, call.user_id, "tts", "count", "none", "tts_characters", 120)]

    async def state() -> tuple[object, ...]:
        return (
            await ledger(database, call.user_id),
            await ledger(database, call.user_id, "tts_characters"),
            await held(database, call.id),
            await usage.session_meters(call.id),
        )

    await usage.flush(batch)  # committed, but say the reply never reached the node
    before = await state()
    assert await usage.flush(batch) == 0  # the node retries the same statement: nothing to write
    assert await state() == before
    assert before[0][0][1:] == (3 * SECOND, 7 * SECOND) and before[1][0][1] == 120 and before[2] == 7 * SECOND


async def test_the_same_flush_racing_itself_on_two_connections_counts_once(
    database: Database, second_pool: asyncpg.Pool
) -> None:
    call = await new_call(database, new_user())
    first, second = UsageRepository(database.pool), UsageRepository(second_pool)
    await first.flush([mic(call, 1)])
    for step in range(1, 41):
        # An original flush and its retry in flight at once, each with a total the other has not seen.
        await asyncio.gather(first.flush([mic(call, step * 100_000)]), second.flush([mic(call, step * 100_000 + 50_000)]))
    [(_, used, _)] = await ledger(database, call.user_id)
    assert used == 40 * 100_000 + 50_000


async def test_reservation_is_consumed_by_flushes_and_release_returns_the_rest(database: Database) -> None:
    usage, quotas = UsageRepository(database.pool), QuotaRepository(database.pool)
    call = await new_call(database, new_user())
    assert await quotas.reserve(call.id, call.user_id, MIC, 5 * SECOND) == 5 * SECOND
    assert (await usage.period_usage(call.user_id))[MIC].reserved == 5 * SECOND
    await usage.flush([mic(call, 2 * SECOND)])
    assert await held(database, call.id) == 3 * SECOND
    [(_, used, reserved)] = await ledger(database, call.user_id)
    assert (used, reserved) == (2 * SECOND, 3 * SECOND)
    # Using more than was reserved empties the reservation and bills all of it.
    await usage.flush([mic(call, 6 * SECOND)])
    assert await held(database, call.id) == 0
    assert (await ledger(database, call.user_id))[0][1:] == (6 * SECOND, 0)
    assert await quotas.reserve(call.id, call.user_id, MIC, 5 * SECOND) == 5 * SECOND
    await usage.flush([mic(call, 7 * SECOND)])
    await quotas.release(call.id)
    await quotas.release(call.id)  # idempotent
    assert await held(database, call.id) == 0
    state = (await usage.period_usage(call.user_id))[MIC]
    assert (state.used, state.reserved, state.remaining) == (7 * SECOND, 0, 3600 * SECOND - 7 * SECOND)


async def test_reserve_grants_what_remains_then_nothing(database: Database) -> None:
    usage, quotas = UsageRepository(database.pool), QuotaRepository(database.pool)
    call = await new_call(database, new_user())
    await quotas.set_limits(call.user_id, {MIC: 10 * SECOND})
    await usage.flush([mic(call, 4 * SECOND)])  # used before anything was reserved
    assert await quotas.reserve(call.id, call.user_id, MIC, 4 * SECOND) == 4 * SECOND
    assert await quotas.reserve(call.id, call.user_id, MIC, 4 * SECOND) == 2 * SECOND
    assert await quotas.reserve(call.id, call.user_id, MIC, 4 * SECOND) == 0
    assert await quotas.exhausted_types(call.user_id, TIME_USAGE_TYPES) == [MIC]
    assert (await usage.period_usage(call.user_id))[MIC].remaining == 0
    await quotas.release(call.id)
    assert await quotas.exhausted_types(call.user_id, TIME_USAGE_TYPES) == []
    assert (await usage.period_usage(call.user_id))[MIC].remaining == 6 * SECOND
    assert await quotas.reserve(call.id, call.user_id, MIC, 0) == 0
    with pytest.raises(ValueError):
        await quotas.reserve(call.id, call.user_id, "minutes", SECOND)
    with pytest.raises(ValueError):
        await quotas.reserve(call.id, call.user_id, MIC, -1)


async def test_ended_or_foreign_sessions_get_no_reservation(database: Database) -> None:
    quotas = QuotaRepository(database.pool)
    call = await new_call(database, new_user())
    assert await quotas.reserve(call.id, new_user("mallory"), MIC, SECOND) == 0
    assert await quotas.reserve(uuid.uuid4(), call.user_id, MIC, SECOND) == 0
    await SessionRepository(database.pool).end(call.id, "hangup")
    assert await quotas.reserve(call.id, call.user_id, MIC, SECOND) == 0
    assert await ledger(database, call.user_id) == []


async def test_concurrent_reservations_from_two_processes_never_exceed_the_limit(
    database: Database, second_pool: asyncpg.Pool
) -> None:
    user = new_user()
    calls = [await new_call(database, user, f"node-{i % 2}") for i in range(10)]
    limit = 1_000_000
    await QuotaRepository(database.pool).set_limits(user, {MIC: limit})
    nodes = [QuotaRepository(database.pool), QuotaRepository(second_pool)]
    # No ledger row exists yet: creating it is part of the race.
    grants = await asyncio.gather(
        *(nodes[i % 2].reserve(calls[i % 10].id, user, MIC, 30_000) for i in range(50))
    )
    assert sum(grants) == limit  # 50 x 30,000 asked, exactly the limit granted
    assert all(0 <= g <= 30_000 for g in grants)
    assert (await ledger(database, user))[0][1:] == (0, limit)
    total_held = await database.pool.fetchval("select sum(reserved) from quota_reservations where user_id = $1", user)
    assert total_held == limit


async def test_flushes_of_one_user_on_two_processes_add_up(database: Database, second_pool: asyncpg.Pool) -> None:
    user = new_user()
    calls = [await new_call(database, user, f"node-{i % 2}") for i in range(6)]
    quotas = [QuotaRepository(database.pool), QuotaRepository(second_pool)]
    usage = [UsageRepository(database.pool), UsageRepository(second_pool)]
    for i, call in enumerate(calls):
        assert await quotas[i % 2].reserve(call.id, user, MIC, 10 * SECOND) == 10 * SECOND
    for step in range(1, 21):
        await asyncio.gather(*(
            usage[node].flush([mic(call, step * 250_000) for call in calls[node::2]]) for node in (0, 1)
        ))
    [(_, used, reserved)] = await ledger(database, user)
    assert (used, reserved) == (6 * 5 * SECOND, 6 * 5 * SECOND)
    for i, call in enumerate(calls):
        await quotas[i % 2].release(call.id)
    assert (await ledger(database, user))[0][1:] == (30 * SECOND, 0)


async def test_unlimited_types_always_grant_the_chunk(database: Database) -> None:
    usage, quotas = UsageRepository(database.pool), QuotaRepository(database.pool)
    call = await new_call(database, new_user())
    tokens = MeterReading(call.id, call.user_id, "agent_tokens", "count", "none", "agent_tokens", 10**12)
    await usage.flush([tokens])
    assert await quotas.reserve(call.id, call.user_id, "agent_tokens", 5_000) == 5_000
    state = (await usage.period_usage(call.user_id))["agent_tokens"]
    assert (state.used, state.limit, state.remaining) == (10**12, None, None)
    assert await quotas.exhausted_types(call.user_id, ["agent_tokens"]) == []


async def test_limits_default_to_the_plan_and_overrides_replace_them(database: Database) -> None:
    quotas = QuotaRepository(database.pool)
    stranger = new_user("nobody")
    defaults = await quotas.limits(stranger)  # not a user yet: the default plan
    assert defaults == {
        "mic_audio_seconds": 3600 * SECOND,
        "speech_audio_seconds": 3600 * SECOND,
        "avatar_video_seconds": 1800 * SECOND,
        "stt_seconds": 3600 * SECOND,
        "tts_characters": 200_000,
        "agent_tokens": None,
    }
    assert not await UserRepository(database.pool).exists(stranger)
    applied = await quotas.set_limits(stranger, {MIC: 60 * SECOND, "tts_characters": None, "agent_tokens": 1000})
    assert applied == {**defaults, MIC: 60 * SECOND, "tts_characters": None, "agent_tokens": 1000}
    assert await quotas.limits(stranger) == applied
    assert await UserRepository(database.pool).exists(stranger)
    assert await quotas.set_limits(stranger, {MIC: 0}) == {**applied, MIC: 0}
    assert await quotas.exhausted_types(stranger, [MIC, "stt_seconds"]) == [MIC]
    for bad in ({"minutes": 1}, {MIC: -1}, {MIC: 1.5}, {MIC: True}):
        with pytest.raises(ValueError):
            await quotas.set_limits(stranger, bad)  # type: ignore[arg-type]
    assert (await quotas.limits(stranger))[MIC] == 0


async def test_usage_goes_to_the_utc_month_of_the_flush(database: Database) -> None:
    usage, quotas = UsageRepository(database.pool), QuotaRepository(database.pool)
    call = await new_call(database, new_user())
    december = datetime(2024, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    january = datetime(2025, 1, 1, tzinfo=UTC)
    still_december = datetime(2025, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))  # 23:30 UTC
    assert await quotas.reserve(call.id, call.user_id, MIC, 5 * SECOND, now=december) == 5 * SECOND
    await usage.flush([mic(call, 2 * SECOND)], now=december)
    await usage.flush([mic(call, 3 * SECOND)], now=still_december)
    # The call crossed midnight: January's reservation gives December's leftover back first.
    assert await quotas.reserve(call.id, call.user_id, MIC, 5 * SECOND, now=january) == 5 * SECOND
    await usage.flush([mic(call, 4 * SECOND)], now=january)
    assert await ledger(database, call.user_id) == [
        (date(2024, 12, 1), 3 * SECOND, 0),
        (date(2025, 1, 1), 1 * SECOND, 4 * SECOND),
    ]
    assert (await usage.period_usage(call.user_id, now=december))[MIC].used == 3 * SECOND
    assert (await usage.period_usage(call.user_id, now=january))[MIC].used == 1 * SECOND
    assert await held(database, call.id) == 4 * SECOND
    assert await database.pool.fetchval(
        "select period from quota_reservations where session_id = $1", call.id
    ) == date(2025, 1, 1)
    with pytest.raises(ValueError):  # a naive time's month would depend on the node's time zone
        await usage.flush([mic(call, 5 * SECOND)], now=datetime(2025, 1, 1))


async def test_a_deleted_session_gives_its_reservation_back(database: Database) -> None:
    quotas = QuotaRepository(database.pool)
    call = await new_call(database, new_user())
    assert await quotas.reserve(call.id, call.user_id, MIC, 5 * SECOND) == 5 * SECOND
    await database.pool.execute("delete from user_sessions where id = $1", call.id)
    assert (await ledger(database, call.user_id))[0][1:] == (0, 0)


async def test_a_restarted_node_ends_its_calls(database: Database) -> None:
    usage, quotas, nodes = UsageRepository(database.pool), QuotaRepository(database.pool), NodeRepository(database.pool)
    node = f"node-{uuid.uuid4().hex[:8]}"
    calls = [await new_call(database, new_user(), node) for _ in range(3)]
    await SessionRepository(database.pool).end(calls[2].id, "hangup")
    await quotas.reserve(calls[0].id, calls[0].user_id, MIC, 5 * SECOND)
    flushed_at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    await usage.flush([mic(calls[0], SECOND)], now=flushed_at)
    ended = await nodes.end_sessions_of(node, "node_restarted")
    assert sorted(ended) == sorted([calls[0].id, calls[1].id])
    rows = {r["id"]: r for r in await database.pool.fetch(
        "select id, status, end_reason, ended_at from user_sessions where node_id = $1", node
    )}
    assert rows[calls[0].id]["ended_at"] == flushed_at  # when its meters last moved
    assert rows[calls[0].id]["end_reason"] == "node_restarted" and rows[calls[1].id]["ended_at"] is not None
    assert rows[calls[2].id]["end_reason"] == "hangup"
    assert await held(database, calls[0].id) == 0
    assert all(reserved == 0 for _, _, reserved in await ledger(database, calls[0].user_id))
    assert (await usage.period_usage(calls[0].user_id, now=flushed_at))[MIC].used == SECOND
    assert await nodes.end_sessions_of(node, "node_restarted") == []


async def test_reaping_ends_the_calls_of_silent_nodes_only_once(database: Database, second_pool: asyncpg.Pool) -> None:
    usage, quotas = UsageRepository(database.pool), QuotaRepository(database.pool)
    dead, live = f"dead-{uuid.uuid4().hex[:8]}", f"live-{uuid.uuid4().hex[:8]}"
    user = new_user()
    dead_calls = [await new_call(database, user, dead) for _ in range(20)]
    live_call = await new_call(database, user, live)
    for call in dead_calls + [live_call]:
        assert await quotas.reserve(call.id, user, MIC, SECOND) == SECOND
    await usage.flush([mic(call, 400_000) for call in dead_calls + [live_call]])
    nodes = NodeRepository(database.pool)
    await nodes.heartbeat(dead)
    await nodes.heartbeat(live)
    await database.pool.execute("update nodes set heartbeat_at = now() - interval '1 hour' where node_id = $1", dead)
    # Every live node reaps; each call is ended by exactly one of them.
    results = await asyncio.gather(
        nodes.reap_dead(600), NodeRepository(second_pool).reap_dead(600), nodes.reap_dead(600)
    )
    mine = {call.id for call in dead_calls + [live_call]}
    reaped = [sid for result in results for sid in result if sid in mine]
    assert sorted(reaped) == sorted(call.id for call in dead_calls)
    statuses = {r["id"]: (r["status"], r["end_reason"]) for r in await database.pool.fetch(
        "select id, status, end_reason from user_sessions where id = any($1::uuid[])", list(mine)
    )}
    assert all(statuses[call.id] == ("ended", "node_lost") for call in dead_calls)
    assert statuses[live_call.id][0] != "ended"
    # The dead calls' leftovers are back; the live call still holds its own.
    [(_, used, reserved)] = await ledger(database, user)
    assert (used, reserved) == (21 * 400_000, 600_000)


async def test_avatar_totals_stay_exact_over_many_fractional_events(database: Database) -> None:
    call = await new_call(database, new_user())
    avatars = AvatarSessionRepository(database.pool)
    avatar_id = await avatars.create(call.id, "hg-1", "token", "avatar-1", quality="high", voice_id="v1")
    durations = [1_234_567, 999_999, 500_001, 2_000_000, 333_333] * 40
    for index, duration_us in enumerate(durations):
        kind = ("speaking", "listening", "idle")[index % 3] if index else "started"
        await avatars.record_event(avatar_id, kind, duration_us=duration_us, quota_cost=Decimal("0.07"), data={"n": index})
    row = await database.pool.fetchrow("select * from avatar_sessions where id = $1", avatar_id)
    assert row["total_streaming_time"] == sum(durations) // SECOND  # 202 s; per-event floors would give 120
    assert sum(d // SECOND for d in durations) < row["total_streaming_time"]
    assert row["quota_consumed"] == Decimal("0.07") * len(durations)
    assert row["session_status"] == "active" and row["quality_setting"] == "high"
    await avatars.record_event(avatar_id, "ended", duration_us=0, quota_cost=Decimal(0))
    row = await database.pool.fetchrow("select * from avatar_sessions where id = $1", avatar_id)
    assert row["session_status"] == "ended" and row["total_streaming_time"] == sum(durations) // SECOND
    last = await database.pool.fetchrow(
        "select event_data, duration_seconds from avatar_session_events where avatar_session_id = $1"
        " and event_data->>'n' = '0'",
        avatar_id,
    )
    assert last["event_data"] == {"n": 0, "duration_us": 1_234_567} and last["duration_seconds"] == 1
    with pytest.raises(ValueError):
        await avatars.record_event(avatar_id, "dancing", duration_us=1, quota_cost=Decimal(0))


async def test_concurrent_avatar_events_all_count(database: Database, second_pool: asyncpg.Pool) -> None:
    call = await new_call(database, new_user())
    avatar_id = await AvatarSessionRepository(database.pool).create(call.id, "hg-2", "token", "avatar-1")
    repos = [AvatarSessionRepository(database.pool), AvatarSessionRepository(second_pool)]
    await asyncio.gather(*(
        repos[i % 2].record_event(avatar_id, "speaking", duration_us=250_000, quota_cost=Decimal("0.01"))
        for i in range(40)
    ))
    row = await database.pool.fetchrow(
        "select total_streaming_time, quota_consumed from avatar_sessions where id = $1", avatar_id
    )
    assert (row["total_streaming_time"], row["quota_consumed"]) == (10, Decimal("0.40"))
