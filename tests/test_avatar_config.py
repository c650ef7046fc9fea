"""The avatar's settings are checked at start, and `run.py rotate-keys` re-encrypts stored tokens under a new key."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from agent_bridge.config import EngineConfig
from agent_bridge.liveavatar.settings import LiveAvatarSettings
from signaling.settings import Settings, UnsafeSettings
from storage.avatar_sessions import AvatarSessionStore
from storage.database import Database, open_database
from storage.sessions import SessionRepository
from storage.token_cipher import TokenCipher
from storage.users import UserRepository

ROOT = Path(__file__).resolve().parent.parent


def key(seed: int) -> str:
    return base64.b64encode(bytes([seed]) * 32).decode()


def test_the_liveavatar_engine_needs_its_key_and_a_known_fallback() -> None:
    with pytest.raises(ValueError, match="LIVEAVATAR_API_KEY"):
        EngineConfig.from_env({"AVATAR_ENGINE": "liveavatar"})
    with pytest.raises(ValueError, match="AVATAR_FALLBACK"):
        EngineConfig.from_env({"AVATAR_FALLBACK": "sometimes"})
    secret = "la-secret-0123456789"
    config = EngineConfig.from_env({"AVATAR_ENGINE": "liveavatar", "LIVEAVATAR_API_KEY": secret, "AVATAR_FALLBACK": "none"})
    assert config.liveavatar is not None and config.liveavatar.api_key == secret and config.avatar_fallback == "none"
    assert secret not in repr(config)  # the key stays out of logs


def test_stored_tokens_need_keys_outside_dev_mode(tmp_path: Path) -> None:
    liveavatar = replace(EngineConfig(), avatar_engine="liveavatar", liveavatar=LiveAvatarSettings(api_key="k"))
    production = Settings(host="0.0.0.0", jwt_secret="x" * 32, var_dir=tmp_path, engines=liveavatar)
    with pytest.raises(UnsafeSettings, match="AVATAR_TOKEN_KEYS"):
        production.check_safe_to_serve()
    replace(production, avatar_token_keys=f"k1:{key(1)}").check_safe_to_serve()
    # A malformed key list is refused in dev mode too, without echoing the key.
    broken = Settings(dev_mode=True, var_dir=tmp_path, avatar_token_keys="k1:not-a-key")
    with pytest.raises(UnsafeSettings) as refused:
        broken.check_safe_to_serve()
    assert "not-a-key" not in str(refused.value)
    # Dev mode without keys derives one from the server's secret.
    assert Settings(dev_mode=True, var_dir=tmp_path, jwt_secret="y" * 32).token_cipher().newest_key_id == "dev"


@pytest.mark.asyncio(loop_scope="session")
async def test_rotate_keys_reencrypts_stored_tokens(database: Database, tmp_path: Path) -> None:
    # Its own database: rotation touches every row, and the suite's rows are under the dev key.
    name = f"rotate_{uuid.uuid4().hex[:8]}"
    await database.pool.execute(f"create database {name}")
    url = database.url.rsplit("/", 1)[0] + f"/{name}" if "?" not in database.url else database.url.replace("/postgres?", f"/{name}?")
    own = await open_database(url, tmp_path / "unused")
    try:
        old = TokenCipher.from_env_value(f"old:{key(1)}")
        await UserRepository(own.pool).ensure("rotating-user")
        session = await SessionRepository(own.pool).create("rotating-user", 300, "node-x")
        row_id = await AvatarSessionStore(own.pool, old).create(
            session.id, "heygen-1", "secret-session-token", "avatar", quality="medium", voice_id=None, expires_at=None
        )
        env = {**os.environ, "DATABASE_URL": url, "VAR_DIR": str(tmp_path), "AVATAR_TOKEN_KEYS": f"new:{key(2)},old:{key(1)}"}
        result = subprocess.run([sys.executable, "run.py", "rotate-keys"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "1 re-encrypted" in result.stdout, result.stdout
        stored = await own.pool.fetchval("select heygen_session_token from avatar_sessions where id = $1", row_id)
        assert stored.startswith("enc:v1:new:") and "secret-session-token" not in stored
        # Readable with the new key alone: the old one can go.
        new_only = AvatarSessionStore(own.pool, TokenCipher.from_env_value(f"new:{key(2)}"))
        assert await new_only.token_of(row_id) == ("heygen-1", "secret-session-token")
        bad = subprocess.run(
            [sys.executable, "run.py", "rotate-keys"], cwd=ROOT, env={**env, "AVATAR_TOKEN_KEYS": "new:short"},
            capture_output=True, text=True, timeout=60,
        )
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    finally:
        await own.close()
        conn: asyncpg.Connection = await asyncpg.connect(database.url)
        try:
            await conn.execute(f"drop database if exists {name} with (force)")
        finally:
            await conn.close()
