"""The usage flusher against a real Postgres: every meter's total reaches the database, and a meter
that has not moved since it was last written is not sent again, unless that write failed."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from media.call_usage import MeterSample
from media.usage_flusher import UsageFlusher
from storage.database import Database
from storage.quotas import QuotaRepository
from storage.sessions import SessionRepository
from storage.usage import UsageRepository
from tests.test_usage_storage import new_call, new_user

pytestmark = pytest.mark.asyncio(loop_scope="session")


@dataclass
class Meters:
    session_id: str
    user_id: str
    totals: dict[str, int] = field(default_factory=dict)

    def usage_snapshot(self) -> list[MeterSample]:
        return [MeterSample(name, "time", "none", None, amount) for name, amount in self.totals.items()]


class Recorded(UsageRepository):
    """The real repository, noting what each flush was asked to write; `fail_next` fails one flush."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.sent: list[list[tuple[str, int]]] = []
        self.fail_next = False

    async def flush(self, readings, *, now=None) -> int:  # type: ignore[no-untyped-def,override]
        self.sent.append(sorted((r.meter, r.amount) for r in readings))
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("the database is away")
        return await super().flush(readings, now=now)


async def stored(database: Database, session_id: str) -> dict[str, int]:
    rows = await database.pool.fetch("select meter, amount from session_meters where session_id = $1::uuid", session_id)
    return {row["meter"]: row["amount"] for row in rows}


async def test_only_moved_meters_are_sent_and_a_failed_write_is_sent_again(database: Database) -> None:
    record = await new_call(database, new_user("flush"))
    call = Meters(str(record.id), record.user_id, {"mic": 0, "speech": 0, "connected": 0})
    usage = Recorded(database.pool)
    live = [call]
    flusher = UsageFlusher(lambda: live, usage, SessionRepository(database.pool), QuotaRepository(database.pool))

    assert await flusher.flush()
    assert usage.sent[-1] == [("connected", 0), ("mic", 0), ("speech", 0)]  # first flush: every meter, zeros too
    assert await flusher.flush()
    assert usage.sent[-1] == []  # nothing moved

    call.totals.update(mic=20_000, connected=20_000)
    assert await flusher.flush()
    assert usage.sent[-1] == [("connected", 20_000), ("mic", 20_000)]
    assert await stored(database, call.session_id) == call.totals

    call.totals.update(speech=40_000)
    usage.fail_next = True
    assert not await flusher.flush()
    call.totals.update(mic=60_000)
    assert await flusher.flush()
    assert usage.sent[-1] == [("mic", 60_000), ("speech", 40_000)]  # the failed write's meter goes again
    assert await stored(database, call.session_id) == call.totals

    # The call ends (it is no longer live): its final totals all go, whether they moved or not.
    live.clear()
    await flusher.call_ended(call, "hangup")  # type: ignore[arg-type]
    assert usage.sent[-1] == [("connected", 20_000), ("mic", 60_000), ("speech", 40_000)]
    assert flusher.pending_ends == 0
    assert await flusher.flush()
    assert usage.sent[-1] == [] and not flusher._written  # nothing kept for a call that is gone
