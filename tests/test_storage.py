"""Storage against a real Postgres: migrations, schema, repositories."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from storage.database import Database, open_database
from storage.migrations import apply_migrations, load_migrations
from storage.sessions import SessionRepository
from storage.users import UserRepository

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def columns(pool: asyncpg.Pool, table: str) -> dict[str, str]:
    rows = await pool.fetch(
        "select column_name, data_type from information_schema.columns where table_name = $1", table
    )
    return {r["column_name"]: r["data_type"] for r in rows}


async def test_migrations_apply_once_and_are_recorded(database: Database) -> None:
    async with database.pool.acquire() as conn:
        assert await apply_migrations(conn) == []  # the fixture already applied them
        recorded = await conn.fetch("select version, name from schema_migrations order by version")
    assert [r["name"] for r in recorded] == [m.name for m in load_migrations()]


async def test_a_failing_migration_rolls_back_whole(database: Database, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("create table mig_probe_ok(id int);")
    (tmp_path / "0002_bad.sql").write_text("create table mig_probe_bad(id int); select * from no_such_table;")
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    async with database.pool.acquire() as conn:
        await conn.execute(f"create schema {schema}")
        try:
            await conn.execute(f"set search_path to {schema}")
            with pytest.raises(asyncpg.UndefinedTableError):
                await apply_migrations(conn, tmp_path)
            tables = {r["tablename"] for r in await conn.fetch("select tablename from pg_tables where schemaname = $1", schema)}
            assert "mig_probe_ok" in tables and "mig_probe_bad" not in tables
            assert [r["version"] for r in await conn.fetch("select version from schema_migrations")] == [1]
        finally:
            await conn.execute(f"drop schema {schema} cascade")
            await conn.execute("reset search_path")


async def test_schema_has_the_product_columns(database: Database) -> None:
    sessions = await columns(database.pool, "user_sessions")
    for name in ("avatar_session_id", "avatar_session_token", "avatar_session_expires_at", "avatar_status",
                 "agent_session_id", "status", "created_at", "ended_at"):
        assert name in sessions, name
    avatar = await columns(database.pool, "avatar_sessions")
    assert avatar["heygen_session_token"] == "text"
    assert avatar["total_streaming_time"] == "integer"
    assert avatar["quota_consumed"] == "numeric"
    events = await columns(database.pool, "avatar_session_events")
    assert events["event_data"] == "jsonb"
    assert events["timestamp"] == "timestamp without time zone"


async def test_avatar_rows_cascade_with_their_session(database: Database) -> None:
    users, sessions = UserRepository(database.pool), SessionRepository(database.pool)
    await users.ensure("cascade-user")
    record = await sessions.create("cascade-user", 60, "node-a")
    avatar_id = await database.pool.fetchval(
        """insert into avatar_sessions(user_session_id, heygen_session_id, heygen_session_token, avatar_id)
           values ($1, 'hg-1', 'tok', 'avatar-1') returning id""",
        record.id,
    )
    await database.pool.execute(
        "insert into avatar_session_events(avatar_session_id, event_type, event_data) values ($1, 'started', $2)",
        avatar_id,
        {"quality": "medium"},
    )
    row = await database.pool.fetchrow("select * from avatar_sessions where id = $1", avatar_id)
    assert row["session_status"] == "active" and row["quality_setting"] == "medium"
    assert await database.pool.fetchval("select event_data from avatar_session_events where avatar_session_id = $1", avatar_id) == {"quality": "medium"}
    await database.pool.execute("delete from user_sessions where id = $1", record.id)
    assert await database.pool.fetchval("select count(*) from avatar_session_events where avatar_session_id = $1", avatar_id) == 0


async def test_session_repository_scopes_by_user_and_ends_once(database: Database) -> None:
    users, sessions = UserRepository(database.pool), SessionRepository(database.pool)
    await users.ensure("alice")
    await users.ensure("alice")  # idempotent
    assert await users.exists("alice")
    record = await sessions.create("alice", 120, "node-a")
    assert record.status == "created" and record.user_id == "alice"
    assert (record.expires_at - record.created_at).total_seconds() == pytest.approx(120, abs=1)
    assert await sessions.get_for_user(record.id, "alice") == record
    assert await sessions.get_for_user(record.id, "mallory") is None
    await sessions.mark_connecting(record.id, "node-b")
    await sessions.mark_connected(record.id)
    assert await sessions.end(record.id, "hangup") is True
    assert await sessions.end(record.id, "ice_failed") is False
    ended = await sessions.get_for_user(record.id, "alice")
    assert ended is not None and ended.status == "ended" and ended.end_reason == "hangup" and ended.node_id == "node-b"
    await sessions.mark_connected(record.id)  # a late event cannot revive it
    assert (await sessions.get_for_user(record.id, "alice")).status == "ended"  # type: ignore[union-attr]


async def test_unused_sessions_expire(database: Database) -> None:
    users, sessions = UserRepository(database.pool), SessionRepository(database.pool)
    await users.ensure("bob")
    stale = await sessions.create("bob", -1, "node-a")
    fresh = await sessions.create("bob", 300, "node-a")
    assert await sessions.end_expired_unused() >= 1
    assert (await sessions.get_for_user(stale.id, "bob")).end_reason == "expired"  # type: ignore[union-attr]
    assert (await sessions.get_for_user(fresh.id, "bob")).status == "created"  # type: ignore[union-attr]


async def test_a_pooled_connection_goes_back_with_no_reset_round_trip_and_its_open_transaction_rolled_back(
    database: Database,
) -> None:
    """The pool sends nothing of its own when a connection is released (asyncpg's default would send its
    reset query every time), and what must not outlive a borrower still does not: an open transaction."""
    table = f"pool_probe_{uuid.uuid4().hex[:8]}"
    await database.pool.execute(f"create table {table}(id int)")
    db = await open_database(database.url, Path("unused"), migrate=False, max_size=1)  # one connection
    statements: list[str] = []
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context["message"]))
    try:
        async with db.pool.acquire() as conn:
            conn.add_query_logger(lambda logged: statements.append(logged.query))
            backend = conn.get_server_pid()
            await conn.execute("begin")
            await conn.execute(f"insert into {table} values (1)")  # left uncommitted by its borrower
        async with db.pool.acquire() as again:
            assert again.get_server_pid() == backend  # the one connection, handed out again
            assert not again.is_in_transaction()
            assert await again.fetchval(f"select count(*) from {table}") == 0
        assert statements == ["begin", f"insert into {table} values (1)", "ROLLBACK", f"select count(*) from {table}"]
        assert any("active transaction" in message for message in reported)
    finally:
        loop.set_exception_handler(handler)
        await db.pool.close()
        await database.pool.execute(f"drop table {table}")
