"""Re-encrypting stored avatar tokens under the newest key (`python run.py rotate-keys`).

Safe while servers run and safe to run again: each row is rewritten only if its token is still the one
read (compare-and-set), so a token a server wrote meanwhile is left as the server wrote it. Run it
after every server has the new key list, or a server still on the old list may write under the old key.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from storage.avatar_sessions import avatar_link_context, heygen_token_context
from storage.token_cipher import TokenCipher, TokenDecryptError, encrypted_prefix, is_encrypted

log = logging.getLogger(__name__)

BATCH_SIZE = 500


@dataclass(frozen=True)
class RotationReport:
    rows_checked: int  # rows holding a token not under the newest key
    rows_reencrypted: int  # of those, ciphertext moved to the newest key
    plaintext_encrypted: int  # of those, plaintext (legacy) encrypted
    failures: int  # tokens that could not be decrypted (key no longer listed, or tampered with)

    def __add__(self, other: RotationReport) -> RotationReport:
        return RotationReport(
            self.rows_checked + other.rows_checked,
            self.rows_reencrypted + other.rows_reencrypted,
            self.plaintext_encrypted + other.plaintext_encrypted,
            self.failures + other.failures,
        )


@dataclass(frozen=True)
class _TokenColumn:
    table: str
    column: str
    context: Callable[[uuid.UUID], bytes]


TOKEN_COLUMNS = (
    _TokenColumn("avatar_sessions", "heygen_session_token", heygen_token_context),
    _TokenColumn("user_sessions", "avatar_session_token", avatar_link_context),
)


async def rotate_tokens(pool: asyncpg.Pool, cipher: TokenCipher, *, batch_size: int = BATCH_SIZE) -> RotationReport:
    """Bring every stored token under cipher's newest key; returns what was done."""
    report = RotationReport(0, 0, 0, 0)
    for column in TOKEN_COLUMNS:
        report += await _rotate_column(pool, cipher, column, batch_size)
    return report


async def _rotate_column(
    pool: asyncpg.Pool, cipher: TokenCipher, column: _TokenColumn, batch_size: int
) -> RotationReport:
    # Keyset pages by id: a row that fails stays behind the cursor instead of being read again.
    select_sql = f"""
        select id, {column.column} as token from {column.table}
        where {column.column} is not null and not starts_with({column.column}, $1) and id > $2
        order by id
        limit $3
    """
    update_sql = f"update {column.table} set {column.column} = $3 where id = $1 and {column.column} = $2"
    checked = reencrypted = encrypted = failures = 0
    after = uuid.UUID(int=0)
    newest = encrypted_prefix(cipher.newest_key_id)
    while True:
        rows = await pool.fetch(select_sql, newest, after, batch_size)
        if not rows:
            break
        after = rows[-1]["id"]
        for row in rows:
            checked += 1
            old = row["token"]
            context = column.context(row["id"])
            try:
                plaintext = cipher.decrypt(old, context=context) if is_encrypted(old) else old
            except TokenDecryptError as exc:
                failures += 1
                log.warning("%s.%s of %s not rotated: %s", column.table, column.column, row["id"], exc)
                continue
            result = await pool.execute(update_sql, row["id"], old, cipher.encrypt(plaintext, context=context))
            if not result.endswith(" 1"):
                continue  # changed since read: the newer write stands, and a re-run looks at it again
            if is_encrypted(old):
                reencrypted += 1
            else:
                encrypted += 1
    return RotationReport(checked, reencrypted, encrypted, failures)
