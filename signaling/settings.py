"""All configuration, read from the environment once, at start."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from agent_bridge.config import EngineConfig
from signaling.limits import Limits
from signaling.turn import TurnConfig
from storage.token_cipher import TokenCipher

MIN_JWT_SECRET_BYTES = 32  # HS256 with a shorter secret can be brute-forced offline from one token


class UnsafeSettings(Exception):
    """The settings would expose the server; `run.py` refuses to serve (exit status 2)."""


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: only this machine can connect."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def default_node_id(port: int) -> str:
    """host:port of the port actually listened on: two processes on one host differ, a restart is the same node."""
    return f"{socket.gethostname()}:{port}"


def _body_limit(raw: str | None, default: int, name: str = "MAX_BODY_BYTES") -> int:
    if raw is None or not raw.strip():
        return default
    if not raw.strip().isdigit() or int(raw) < 1024:
        raise ValueError(f"{name} must be a whole number of bytes >= 1024, got {raw!r}")
    return int(raw)


def _positive_float(raw: str | None, name: str, default: float) -> float:
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds > 0, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a number of seconds > 0, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    dev_mode: bool = False
    dev_mode_allow_remote: bool = False  # DEV_MODE on a non-loopback address (hands out tokens to anyone)
    database_url: str | None = None
    var_dir: Path = Path("var")
    pgdata: Path = Path("var/pgdata")
    jwt_secret: str | None = None
    jwt_audience: str = "authenticated"
    jwt_issuer: str | None = None  # when set, every token's `iss` must equal it
    ice_servers: list[dict[str, object]] = field(default_factory=list)
    turn: TurnConfig | None = None  # TURN_URLS, TURN_SECRET, TURN_TTL_S: short-lived credentials per session and call
    session_ttl_seconds: int = 300
    max_body_bytes: int = 64 * 1024
    # POST /api/v1/voice/transcribe only: the longest clip, and the biggest upload (its own body limit).
    max_clip_seconds: float = 60.0
    max_clip_bytes: int = 16 * 1024 * 1024
    # Stable across restarts on one host and port, so a restarted node ends the calls it owned.
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}")
    quota_chunk_seconds: float = 5.0
    quota_chunk_max_seconds: float = 60.0  # a chunk grows to this while the month has plenty left
    avatar_cost_per_minute: Decimal = Decimal("1.00")  # quota_cost of a minute of avatar video
    node_stale_seconds: float = 15.0
    pipeline: str = "voice"  # what every call does with its media (media/pipelines.py)
    end_of_turn_ms: int = 500  # silence that ends a user's turn
    end_of_turn_unfinished_ms: int = 700  # more silence for a turn whose words sound unfinished
    engines: EngineConfig = field(default_factory=EngineConfig)
    limits: Limits = field(default_factory=Limits)
    # AVATAR_TOKEN_KEYS (storage/token_cipher.py): the keys of avatar tokens at rest, newest first.
    avatar_token_keys: str | None = field(default=None, repr=False)
    # METRICS_TOKEN: when set, GET /metrics needs `Authorization: Bearer <it>` (signaling/metrics.py).
    metrics_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        var_dir = Path(environ.get("VAR_DIR", "var"))
        ice_raw = environ.get("ICE_SERVERS", "[]")
        try:
            ice_servers = json.loads(ice_raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"ICE_SERVERS must be a JSON list of {{'urls': ...}} objects: {exc}") from exc
        if not isinstance(ice_servers, list):
            raise ValueError("ICE_SERVERS must be a JSON list")
        defaults = cls()
        host = environ.get("HOST", defaults.host)
        port = int(environ.get("PORT", defaults.port))
        return cls(
            host=host,
            port=port,
            node_id=environ.get("NODE_ID") or default_node_id(port),  # run.py names the port it bound
            quota_chunk_seconds=float(environ.get("QUOTA_CHUNK_SECONDS", defaults.quota_chunk_seconds)),
            quota_chunk_max_seconds=float(environ.get("QUOTA_CHUNK_MAX_SECONDS", defaults.quota_chunk_max_seconds)),
            avatar_cost_per_minute=Decimal(environ.get("AVATAR_COST_PER_MINUTE", str(defaults.avatar_cost_per_minute))),
            node_stale_seconds=float(environ.get("NODE_STALE_SECONDS", defaults.node_stale_seconds)),
            dev_mode=_flag(environ.get("DEV_MODE")),
            dev_mode_allow_remote=_flag(environ.get("DEV_MODE_ALLOW_REMOTE")),
            database_url=environ.get("DATABASE_URL") or None,
            var_dir=var_dir,
            pgdata=Path(environ.get("PGDATA_DIR", str(var_dir / "pgdata"))),
            jwt_secret=environ.get("JWT_SECRET") or None,
            jwt_issuer=environ.get("JWT_ISSUER") or None,
            ice_servers=ice_servers,
            turn=TurnConfig.from_env(environ),
            session_ttl_seconds=int(environ.get("SESSION_TTL_SECONDS", defaults.session_ttl_seconds)),
            max_body_bytes=_body_limit(environ.get("MAX_BODY_BYTES"), defaults.max_body_bytes),
            max_clip_seconds=_positive_float(environ.get("MAX_CLIP_SECONDS"), "MAX_CLIP_SECONDS", defaults.max_clip_seconds),
            max_clip_bytes=_body_limit(environ.get("MAX_CLIP_BYTES"), defaults.max_clip_bytes, "MAX_CLIP_BYTES"),
            pipeline=environ.get("PIPELINE", defaults.pipeline),
            end_of_turn_ms=int(environ.get("END_OF_TURN_MS", defaults.end_of_turn_ms)),
            end_of_turn_unfinished_ms=int(environ.get("END_OF_TURN_UNFINISHED_MS", defaults.end_of_turn_unfinished_ms)),
            engines=EngineConfig.from_env(environ),
            limits=Limits.from_env(environ),
            avatar_token_keys=(environ.get("AVATAR_TOKEN_KEYS") or "").strip() or None,
            metrics_token=(environ.get("METRICS_TOKEN") or "").strip() or None,
        )

    def resolve_jwt_secret(self, *, create: bool | None = None) -> str:
        """JWT_SECRET, or a random secret kept in var/ (made in dev mode) so tokens survive restarts."""
        if self.jwt_secret:
            return self.jwt_secret
        path = self.var_dir / "jwt_secret"
        if path.exists():
            return path.read_text().strip()
        if not (self.dev_mode if create is None else create):
            raise RuntimeError("JWT_SECRET is not set (only DEV_MODE=1 generates one)")
        self.var_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret)
        return secret

    def token_cipher(self) -> TokenCipher:
        """AVATAR_TOKEN_KEYS; in dev mode without them, a key derived from this server's JWT secret."""
        if self.avatar_token_keys:
            return TokenCipher.from_env_value(self.avatar_token_keys)
        if not self.dev_mode:
            raise RuntimeError("AVATAR_TOKEN_KEYS is not set (only DEV_MODE=1 derives a key)")
        return TokenCipher.dev(self.resolve_jwt_secret())

    def check_safe_to_serve(self) -> None:
        """Refuse settings that would expose the server; raises UnsafeSettings with a one-line reason."""
        if self.avatar_token_keys:
            try:
                TokenCipher.from_env_value(self.avatar_token_keys)
            except ValueError as exc:
                raise UnsafeSettings(str(exc)) from None
        if self.dev_mode:
            # Dev mode hands a token to anyone who asks, so it stays on this machine unless told otherwise.
            if not is_loopback_host(self.host) and not self.dev_mode_allow_remote:
                raise UnsafeSettings(
                    f"DEV_MODE=1 serves /dev/token to anyone, so it listens on loopback only, not HOST={self.host!r}; "
                    "set DEV_MODE_ALLOW_REMOTE=1 to override"
                )
            return
        try:
            secret = self.resolve_jwt_secret(create=False)
        except RuntimeError:
            raise UnsafeSettings(
                f"JWT_SECRET is not set; set a random secret of at least {MIN_JWT_SECRET_BYTES} bytes "
                "(or DEV_MODE=1 on loopback)"
            ) from None
        if len(secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise UnsafeSettings(f"JWT_SECRET is shorter than {MIN_JWT_SECRET_BYTES} bytes; use a longer random secret")
        if self.engines.avatar_engine == "liveavatar" and not self.avatar_token_keys:
            raise UnsafeSettings("AVATAR_ENGINE=liveavatar stores session tokens encrypted: set AVATAR_TOKEN_KEYS")

