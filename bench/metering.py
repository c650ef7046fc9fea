"""The per-second usage flush of one node: N live meters written in one statement, timed.

Starts an embedded PostgreSQL in a temporary folder (or uses DATABASE_URL), opens 250 calls of
4 meters each across 25 users, each call holding quota reservations, then runs rounds in which
every meter rises and UsageRepository.flush writes them all. Prints ms per flush and rows written.

Usage: python bench/metering.py [--meters 1000] [--rounds 30] [--interval 0]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.database import Database, open_database  # noqa: E402
from storage.quotas import QuotaRepository  # noqa: E402
from storage.sessions import SessionRepository  # noqa: E402
from storage.usage import MeterReading, UsageRepository  # noqa: E402
from storage.users import UserRepository  # noqa: E402

# What a voice call meters each second: (meter, kind, direction, usage type, rise per second).
CALL_METERS = (
    ("mic", "audio", "inbound", "mic_audio_seconds", 1_000_000),
    ("speech", "audio", "outbound", "speech_audio_seconds", 400_000),
    ("connected", "time", "none", None, 1_000_000),
    ("tts_characters", "count", "none", "tts_characters", 12),
)
CALLS_PER_USER = 10
RESERVATION = {"mic_audio_seconds": 60_000_000, "speech_audio_seconds": 60_000_000, "tts_characters": 2_000}


@dataclass
class Meter:
    session_id: uuid.UUID
    user_id: str
    name: str
    kind: str
    direction: str
    usage_type: str | None
    rise: int
    amount: int = 0

    def reading(self) -> MeterReading:
        return MeterReading(self.session_id, self.user_id, self.name, self.kind, self.direction, self.usage_type, self.amount)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


async def open_calls(db: Database, meters: int, run_id: str) -> list[Meter]:
    users, sessions, quotas = UserRepository(db.pool), SessionRepository(db.pool), QuotaRepository(db.pool)
    calls = math.ceil(meters / len(CALL_METERS))
    opened: list[Meter] = []
    for index in range(calls):
        user_id = f"bench-{run_id}-{index // CALLS_PER_USER}"
        if index % CALLS_PER_USER == 0:
            await users.ensure(user_id)
        call = await sessions.create(user_id, 3600, f"bench-node-{run_id}")
        for usage_type, chunk in RESERVATION.items():
            await quotas.reserve(call.id, user_id, usage_type, chunk)
        for name, kind, direction, usage_type, rise in CALL_METERS:
            opened.append(Meter(call.id, user_id, name, kind, direction, usage_type, rise))
    return opened[:meters]


async def run(db: Database, meters: int, rounds: int, interval_s: float) -> None:
    run_id = uuid.uuid4().hex[:8]
    usage = UsageRepository(db.pool)
    live = await open_calls(db, meters, run_id)
    users = sorted({m.user_id for m in live})
    print(f"{len(live)} meters of {len({m.session_id for m in live})} calls of {len(users)} users", flush=True)
    rng = random.Random(7)
    timings_ms: list[float] = []
    written: list[int] = []
    for round_index in range(rounds + 1):  # round 0 inserts the meters; the rest raise them
        for meter in live:
            meter.amount += meter.rise + rng.randrange(0, max(meter.rise // 50, 1))
        readings = [meter.reading() for meter in live]
        started = time.perf_counter_ns()
        rows = await usage.flush(readings)
        elapsed_ms = (time.perf_counter_ns() - started) / 1e6
        if round_index == 0:
            print(f"first flush (inserts {rows} rows): {elapsed_ms:.1f} ms", flush=True)
        else:
            timings_ms.append(elapsed_ms)
            written.append(rows)
        if interval_s:
            await asyncio.sleep(interval_s)
    billed = await db.pool.fetchval(
        "select coalesce(sum(used), 0) from usage_ledger where user_id = any($1::text[])", users
    )
    metered = sum(m.amount for m in live if m.usage_type is not None)
    print()
    print(f"per-second flush of {len(live)} meters, {rounds} rounds (one statement each)")
    print(f"  ms per flush   p50 {percentile(timings_ms, 50):7.1f}   p95 {percentile(timings_ms, 95):7.1f}"
          f"   max {max(timings_ms):7.1f}")
    print(f"  rows written   min {min(written):7d}   max {max(written):7d}")
    print(f"  ledger check   billed {billed} = metered {metered}: {'ok' if billed == metered else 'MISMATCH'}")
    await db.pool.execute("delete from users where id = any($1::text[])", users)


async def main_async(args: argparse.Namespace) -> None:
    url = os.environ.get("DATABASE_URL")
    with tempfile.TemporaryDirectory(prefix="bench-metering-") as tmp:
        print("database:", "DATABASE_URL" if url else f"embedded PostgreSQL in {tmp}", flush=True)
        db = await open_database(url, Path(tmp) / "pgdata")
        try:
            await run(db, args.meters, args.rounds, args.interval)
        finally:
            await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between flushes (0: back to back)")
    args = parser.parse_args()
    if args.meters < 1 or args.rounds < 1:
        parser.error("--meters and --rounds must be at least 1")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
