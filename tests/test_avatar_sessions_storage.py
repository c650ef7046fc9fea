"""Avatar session rows against a real Postgres: tokens encrypted at rest, key rotation, orphans to stop."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from storage.avatar_sessions import AvatarSessionStore, OrphanAvatar, heygen_token_context
from storage.avatar_usage import AvatarSessionRepository
from storage.database import Database
from storage.nodes import NodeRepository
from storage.sessions import SessionRecord, SessionRepository
from storage.token_cipher import TokenCipher, TokenDecryptError
from storage.token_rotation import rotate_tokens

pytestmark = pytest.mark.asyncio(loop_scope="session")


def new_cipher(*key_ids: str) -> TokenCipher:
    return TokenCipher([(kid, os.urandom(32)) for kid in key_ids or ("k1",)])


def secret(label: str = "token") -> str:
    # Looks like a provider token; unique per use, so finding it in a row means it leaked there.
    return f"hg.{label}.{uuid.uuid4().hex}{uuid.uuid4().hex}"


async def new_call(database: Database, node_id: str = "node-avatars") -> SessionRecord:
    user = f"avatar-user-{uuid.uuid4().hex[:10]}"
    await database.pool.execute("insert into users(id) values ($1) on conflict do nothing", user)
    return await SessionRepository(database.pool).create(user, 300, node_id)


async def raw_avatar_row(database: Database, avatar_session_id: uuid.UUID) -> asyncpg.Record:
    return await database.pool.fetchrow("select * from avatar_sessions where id = $1", avatar_session_id)


def in_minutes(minutes: float) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


async def test_a_created_session_stores_no_plaintext_and_reads_back(database: Database) -> None:
    store = AvatarSessionStore(database.pool, new_cipher())
    call = await new_call(database)
    token = secret()
    avatar_id = await store.create(
        call.id, "hg-session-1", token, "avatar-a", quality="high", voice_id="v1", expires_at=in_minutes(10)
    )
    row = await raw_avatar_row(database, avatar_id)
    assert token not in row["heygen_session_token"] and token[10:40] not in row["heygen_session_token"]
    assert token not in " ".join(str(value) for value in row.values())
    assert row["heygen_session_token"].startswith("enc:v1:k1:")
    assert await store.token_of(avatar_id) == ("hg-session-1", token)
    record = await store.get(avatar_id)
    assert record is not None and record.session_status == "created" and record.provider == "liveavatar"
    assert record.quality_setting == "high" and record.voice_id == "v1" and record.user_session_id == call.id
    assert token not in repr(record)
    assert await store.get_for_user_session(call.id) == record
    assert await store.get(uuid.uuid4()) is None
    with pytest.raises(LookupError):
        await store.token_of(uuid.uuid4())


async def test_status_and_provider_ids_move_on_until_the_session_is_over(database: Database) -> None:
    store = AvatarSessionStore(database.pool, new_cipher())
    call = await new_call(database)
    avatar_id = await store.create(
        call.id, "pending", secret("first"), "avatar-a", quality="medium", voice_id=None, expires_at=None
    )
    started = secret("started")
    assert await store.set_heygen_ids(avatar_id, "hg-started", started)
    assert await store.set_status(avatar_id, "active")
    assert await store.token_of(avatar_id) == ("hg-started", started)
    assert started not in (await raw_avatar_row(database, avatar_id))["heygen_session_token"]
    assert await store.set_status(avatar_id, "stopping")
    assert await store.set_status(avatar_id, "ended")
    record = await store.get(avatar_id)
    assert record is not None and record.session_status == "ended" and record.stopped_at is not None
    assert not await store.set_status(avatar_id, "active")  # never revived
    assert not await store.set_heygen_ids(avatar_id, "hg-other", secret())
    with pytest.raises(ValueError, match="unknown avatar session status"):
        await store.set_status(avatar_id, "dancing")
    # A call that started its avatar again: the newest one is the call's.
    again = await store.create(
        call.id, "hg-again", secret(), "avatar-a", quality="medium", voice_id=None, expires_at=None
    )
    newest = await store.get_for_user_session(call.id)
    assert newest is not None and newest.id == again


async def test_a_token_copied_into_another_row_does_not_decrypt(database: Database) -> None:
    store = AvatarSessionStore(database.pool, new_cipher())
    first, second = await new_call(database), await new_call(database)
    a = await store.create(first.id, "hg-a", secret("a"), "avatar-a", quality="medium", voice_id=None, expires_at=None)
    b = await store.create(second.id, "hg-b", secret("b"), "avatar-a", quality="medium", voice_id=None, expires_at=None)
    await database.pool.execute(
        "update avatar_sessions set heygen_session_token = (select heygen_session_token from avatar_sessions where id = $1) where id = $2",
        a,
        b,
    )
    with pytest.raises(TokenDecryptError, match="copied from another row"):
        await store.token_of(b)
    # The user session's copy is bound to its user session in the same way.
    assert await store.set_avatar_link(first.id, a, "active", secret("link"), in_minutes(5))
    await database.pool.execute(
        "update user_sessions set avatar_session_token = (select avatar_session_token from user_sessions where id = $1) where id = $2",
        first.id,
        second.id,
    )
    with pytest.raises(TokenDecryptError, match="copied from another row"):
        await store.avatar_link_token(second.id)


async def test_tampered_and_unknown_key_tokens_fail_clearly(database: Database) -> None:
    old = AvatarSessionStore(database.pool, new_cipher("old"))
    call = await new_call(database)
    avatar_id = await old.create(
        call.id, "hg-t", secret(), "avatar-a", quality="medium", voice_id=None, expires_at=None
    )
    with pytest.raises(TokenDecryptError, match="key id 'old', which AVATAR_TOKEN_KEYS does not list"):
        await AvatarSessionStore(database.pool, new_cipher("new")).token_of(avatar_id)
    stored = (await raw_avatar_row(database, avatar_id))["heygen_session_token"]
    tampered = stored[:-3] + ("AAA" if not stored.endswith("AAA") else "BBB")
    await database.pool.execute(
        "update avatar_sessions set heygen_session_token = $2 where id = $1", avatar_id, tampered
    )
    with pytest.raises(TokenDecryptError, match="does not authenticate"):
        await old.token_of(avatar_id)


async def test_the_user_session_link_is_encrypted(database: Database) -> None:
    store = AvatarSessionStore(database.pool, new_cipher())
    call = await new_call(database)
    avatar_id = await store.create(
        call.id, "hg-l", secret(), "avatar-a", quality="medium", voice_id=None, expires_at=None
    )
    token = secret("link")
    expires = in_minutes(5)
    assert await store.set_avatar_link(call.id, avatar_id, "active", token, expires)
    row = await database.pool.fetchrow("select * from user_sessions where id = $1", call.id)
    assert token not in row["avatar_session_token"] and row["avatar_session_token"].startswith("enc:v1:k1:")
    assert row["avatar_session_id"] == str(avatar_id) and row["avatar_status"] == "active"
    assert abs((row["avatar_session_expires_at"] - expires).total_seconds()) < 0.001
    assert await store.avatar_link_token(call.id) == token
    assert await store.set_avatar_link(call.id, avatar_id, "ended", None, None)
    assert await store.avatar_link_token(call.id) is None
    assert not await store.set_avatar_link(uuid.uuid4(), avatar_id, "active", token, None)


async def test_the_rendered_avatar_rows_keep_no_secret(database: Database) -> None:
    call = await new_call(database)
    # Without a cipher only a non-secret label is taken (what the rendered avatar stores).
    plain = AvatarSessionRepository(database.pool)
    labelled = await plain.create(call.id, f"rendered-{call.id}", "offline", "avatar-r")
    assert (await raw_avatar_row(database, labelled))["heygen_session_token"] == "offline"
    with pytest.raises(ValueError, match="TokenCipher"):
        await plain.create(call.id, "hg-x", secret(), "avatar-r")
    cipher = new_cipher()
    token = secret()
    encrypted = await AvatarSessionRepository(database.pool, cipher).create(
        call.id, "hg-y", token, "avatar-r", expires_at=in_minutes(1)
    )
    row = await raw_avatar_row(database, encrypted)
    assert token not in row["heygen_session_token"] and row["provider"] is None and row["session_status"] == "active"
    assert cipher.decrypt(row["heygen_session_token"], context=heygen_token_context(encrypted)) == token


async def test_rotation_moves_old_rows_to_the_new_key_and_encrypts_plaintext(database: Database) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    before = AvatarSessionStore(database.pool, TokenCipher([("rot1", k1)]))
    call, legacy_call = await new_call(database), await new_call(database)
    token, link = secret("rotated"), secret("rotated-link")
    avatar_id = await before.create(
        call.id, "hg-r", token, "avatar-a", quality="medium", voice_id=None, expires_at=None
    )
    assert await before.set_avatar_link(call.id, avatar_id, "active", link, None)
    # Rows from before tokens were encrypted.
    legacy_token, legacy_link = secret("legacy"), secret("legacy-link")
    legacy_id = await database.pool.fetchval(
        """insert into avatar_sessions(user_session_id, provider, heygen_session_id, heygen_session_token, avatar_id)
           values ($1, 'liveavatar', 'hg-legacy', $2, 'avatar-a') returning id""",
        legacy_call.id,
        legacy_token,
    )
    await database.pool.execute(
        "update user_sessions set avatar_session_token = $2 where id = $1", legacy_call.id, legacy_link
    )

    rotating = TokenCipher([("rot2", k2), ("rot1", k1)])
    report = await rotate_tokens(database.pool, rotating, batch_size=3)  # several pages
    assert report.rows_reencrypted >= 2 and report.plaintext_encrypted >= 2
    assert report.rows_checked >= report.rows_reencrypted + report.plaintext_encrypted

    after = AvatarSessionStore(database.pool, TokenCipher([("rot2", k2)]))  # the old key dropped
    assert await after.token_of(avatar_id) == ("hg-r", token)
    assert await after.avatar_link_token(call.id) == link
    assert await after.token_of(legacy_id) == ("hg-legacy", legacy_token)
    assert await after.avatar_link_token(legacy_call.id) == legacy_link
    for row in await database.pool.fetch(
        "select heygen_session_token from avatar_sessions where id = any($1::uuid[])", [avatar_id, legacy_id]
    ):
        assert (
            row["heygen_session_token"].startswith("enc:v1:rot2:") and legacy_token not in row["heygen_session_token"]
        )
    for row in await database.pool.fetch(
        "select avatar_session_token from user_sessions where id = any($1::uuid[])", [call.id, legacy_call.id]
    ):
        assert row["avatar_session_token"].startswith("enc:v1:rot2:") and legacy_link not in row["avatar_session_token"]

    # Running it again leaves these rows as they are.
    rotated = await raw_avatar_row(database, avatar_id)
    await rotate_tokens(database.pool, rotating)
    assert (await raw_avatar_row(database, avatar_id))["heygen_session_token"] == rotated["heygen_session_token"]
    assert await after.token_of(avatar_id) == ("hg-r", token)


async def test_rotation_counts_rows_it_cannot_read_and_goes_on(database: Database) -> None:
    call = await new_call(database)
    lost = AvatarSessionStore(database.pool, new_cipher("lost"))
    lost_id = await lost.create(
        call.id, "hg-lost", secret(), "avatar-a", quality="medium", voice_id=None, expires_at=None
    )
    cipher = new_cipher("fresh")
    report = await rotate_tokens(database.pool, cipher)
    assert report.failures >= 1
    assert (await raw_avatar_row(database, lost_id))["heygen_session_token"].startswith(
        "enc:v1:lost:"
    )  # left as it was


async def test_rotation_leaves_a_row_written_meanwhile(database: Database) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    call = await new_call(database)
    store = AvatarSessionStore(database.pool, TokenCipher([("cas1", k1)]))
    avatar_id = await store.create(
        call.id, "hg-c", secret(), "avatar-a", quality="medium", voice_id=None, expires_at=None
    )
    newer = secret("newer")
    # A server writes between the rotation's read and its write: the rotation's write must not land.
    original_execute = database.pool.execute

    class RacingPool:
        def __init__(self) -> None:
            self.raced = False

        async def fetch(self, *args: object) -> list[asyncpg.Record]:
            return await database.pool.fetch(*args)

        async def execute(self, *args: object) -> str:
            if not self.raced and args[1] == avatar_id:
                self.raced = True
                await AvatarSessionStore(database.pool, TokenCipher([("cas2", k2), ("cas1", k1)])).set_heygen_ids(
                    avatar_id, "hg-c2", newer
                )
            return await original_execute(*args)

    racing = RacingPool()
    await rotate_tokens(racing, TokenCipher([("cas3", os.urandom(32)), ("cas2", k2), ("cas1", k1)]))  # type: ignore[arg-type]
    assert racing.raced
    row = await raw_avatar_row(database, avatar_id)
    assert row["heygen_session_token"].startswith("enc:v1:cas2:")  # the server's write stands
    assert await AvatarSessionStore(database.pool, TokenCipher([("cas2", k2)])).token_of(avatar_id) == ("hg-c2", newer)


async def test_orphans_are_found_and_each_is_stopped_once(database: Database) -> None:
    cipher = new_cipher()
    store = AvatarSessionStore(database.pool, cipher)
    nodes = NodeRepository(database.pool)
    live_node, dead_node = f"live-{uuid.uuid4().hex[:8]}", f"dead-{uuid.uuid4().hex[:8]}"
    await nodes.heartbeat(live_node)
    await database.pool.execute(
        "insert into nodes(node_id, heartbeat_at) values ($1, now() - interval '10 minutes')", dead_node
    )
    sessions = SessionRepository(database.pool)

    async def avatar(
        call: SessionRecord, *, expires_in_min: float = 10, status: str = "active"
    ) -> tuple[uuid.UUID, str]:
        token = secret()
        avatar_id = await store.create(
            call.id,
            f"hg-{uuid.uuid4().hex[:6]}",
            token,
            "avatar-a",
            quality="medium",
            voice_id=None,
            expires_at=in_minutes(expires_in_min),
            status=status,
        )
        return avatar_id, token

    ended_call = await new_call(database, live_node)
    await sessions.end(ended_call.id, "hangup")
    await database.pool.execute(
        "update user_sessions set ended_at = now() - interval '5 minutes' where id = $1", ended_call.id
    )
    ended, ended_token = await avatar(ended_call)
    dead, _ = await avatar(await new_call(database, dead_node), status="stopping")
    expired, _ = await avatar(await new_call(database, live_node), expires_in_min=-1)
    healthy, _ = await avatar(await new_call(database, live_node))
    already, _ = await avatar(await new_call(database, dead_node))
    assert await store.mark_stopped(already, "ended")
    just_ended_call = await new_call(database, live_node)
    await sessions.end(just_ended_call.id, "hangup")
    just_ended, _ = await avatar(just_ended_call)  # its own node is still stopping it
    rendered = await AvatarSessionRepository(database.pool).create(ended_call.id, "rendered-x", "offline", "avatar-r")

    async def found(grace_s: float) -> dict[uuid.UUID, OrphanAvatar]:
        orphans = await store.orphaned_sessions(node_stale_after_s=60, ended_grace_s=grace_s, limit=10_000)
        return {o.avatar_session_id: o for o in orphans}

    orphans = await found(grace_s=30)
    assert orphans[ended].reason == "user_session_ended" and orphans[ended].heygen_session_token == ended_token
    assert orphans[dead].reason == "node_dead" and orphans[dead].node_id == dead_node
    assert orphans[dead].session_status == "stopping"
    assert orphans[expired].reason == "expired"
    assert {healthy, already, just_ended, rendered}.isdisjoint(orphans)
    assert ended_token not in repr(orphans[ended])
    assert just_ended in await found(grace_s=-1)  # past the grace it is the sweeper's

    # Two nodes sweeping at once: each session is stopped by exactly one of them.
    second = AvatarSessionStore(database.pool, cipher)  # another node, same keys
    targets = [ended, dead, expired]
    results = await asyncio.gather(*(s.mark_stopped(t) for t in targets for s in (store, second, store, second)))
    assert sum(results) == len(targets)
    for target in targets:
        record = await store.get(target)
        assert record is not None and record.session_status == "stopped" and record.stopped_at is not None
    assert {ended, dead, expired}.isdisjoint(await found(grace_s=30))
    assert not await store.mark_stopped(ended)
    with pytest.raises(ValueError):
        await store.mark_stopped(healthy, "failed")


async def test_an_orphan_with_an_unreadable_token_is_still_listed(database: Database) -> None:
    call = await new_call(database, "node-never-seen")
    avatar_id = await AvatarSessionStore(database.pool, new_cipher("gone")).create(
        call.id, "hg-u", secret(), "avatar-a", quality="medium", voice_id=None, expires_at=None
    )
    orphans = await AvatarSessionStore(database.pool, new_cipher("k9")).orphaned_sessions(
        node_stale_after_s=60, limit=10_000
    )
    [orphan] = [o for o in orphans if o.avatar_session_id == avatar_id]
    assert orphan.reason == "node_dead" and orphan.heygen_session_token is None
