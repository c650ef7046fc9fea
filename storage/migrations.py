"""Numbered .sql files applied once each, in order, each in its own transaction."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Serialises migrators when several nodes start at once on one database.
_ADVISORY_LOCK_KEY = 0x766F6963  # "voic"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name must look like 0001_name.sql: {path.name}")
        found.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers in {directory}")
    return found


async def apply_migrations(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is missing; returns the names applied now."""
    await conn.execute(
        """
        create table if not exists schema_migrations (
            version integer primary key,
            name text not null,
            applied_at timestamptz not null default now()
        )
        """
    )
    applied_now: list[str] = []
    await conn.execute("select pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
    try:
        done = {row["version"] for row in await conn.fetch("select version from schema_migrations")}
        for migration in load_migrations(directory):
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "insert into schema_migrations(version, name) values ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied_now.append(migration.name)
    finally:
        await conn.execute("select pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)
    return applied_now
