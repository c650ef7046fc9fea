"""LiveAvatar settings, read from the environment once at start.

LIVEAVATAR_API_KEY      required; the key from app.liveavatar.com/developers (HeyGen keys do not work)
LIVEAVATAR_API_URL      default https://api.liveavatar.com (the paths below it start with /v1)
LIVEAVATAR_AVATAR_ID    default the documented public "Wayne" avatar; empty: every session must name one
LIVEAVATAR_AVATAR_IDS   optional, comma-separated: more avatars users may choose (the catalogue)
LIVEAVATAR_QUALITY      very_high | high | medium | low; unset: the service's default (high)
LIVEAVATAR_SANDBOX      1/true: free ~1 minute sessions (only the Wayne avatar), for wiring tests
LIVEAVATAR_MAX_SESSION_SECONDS   optional cap sent with each token, within the plan's limit
LIVEAVATAR_KEEP_ALIVE_SECONDS    default 60; LITE sessions close after 5 idle minutes
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_API_URL = "https://api.liveavatar.com"
# The public avatar the LiveAvatar docs name for sandbox mode, also usable outside it.
DEFAULT_AVATAR_ID = "dd73ea75-1218-4ef3-92ce-606d5f7fbc0a"
QUALITIES = ("very_high", "high", "medium", "low")


@dataclass(frozen=True)
class LiveAvatarSettings:
    api_key: str = field(repr=False)  # a secret: kept out of repr and so out of logs
    api_url: str = DEFAULT_API_URL
    avatar_id: str | None = DEFAULT_AVATAR_ID
    avatar_ids: tuple[str, ...] = ()  # more avatars users may choose; the service has no list we can read
    quality: str | None = None
    sandbox: bool = False
    max_session_duration_s: int | None = None
    keep_alive_interval_s: float = 60.0
    # Bounds of each REST call; start provisions the avatar so it gets longer.
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 10.0
    start_timeout_s: float = 30.0
    stop_timeout_s: float = 5.0  # the whole of stop(): it runs on teardown paths that must end
    # Audio held while the realtime socket waits for the service's "connected" state.
    max_pending_audio_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("LIVEAVATAR_API_KEY is required")
        if self.quality is not None and self.quality not in QUALITIES:
            raise ValueError(f"LIVEAVATAR_QUALITY must be one of {', '.join(QUALITIES)}, got {self.quality!r}")
        if not self.api_url.startswith(("http://", "https://")):
            raise ValueError(f"LIVEAVATAR_API_URL must be an http(s) URL, got {self.api_url!r}")
        object.__setattr__(self, "api_url", self.api_url.rstrip("/"))
        for name in ("keep_alive_interval_s", "connect_timeout_s", "request_timeout_s", "start_timeout_s",
                     "stop_timeout_s", "max_pending_audio_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_session_duration_s is not None and self.max_session_duration_s <= 0:
            raise ValueError("LIVEAVATAR_MAX_SESSION_SECONDS must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> LiveAvatarSettings:
        api_key = (environ.get("LIVEAVATAR_API_KEY") or "").strip()
        if not api_key:
            raise ValueError("LIVEAVATAR_API_KEY is required (AVATAR_ENGINE=liveavatar)")
        avatar_id = environ.get("LIVEAVATAR_AVATAR_ID")
        quality = (environ.get("LIVEAVATAR_QUALITY") or "").strip().lower() or None
        return cls(
            api_key=api_key,
            api_url=(environ.get("LIVEAVATAR_API_URL") or "").strip() or DEFAULT_API_URL,
            avatar_id=DEFAULT_AVATAR_ID if avatar_id is None else (avatar_id.strip() or None),
            avatar_ids=tuple(a.strip() for a in (environ.get("LIVEAVATAR_AVATAR_IDS") or "").split(",") if a.strip()),
            quality=quality,
            sandbox=_flag(environ, "LIVEAVATAR_SANDBOX"),
            max_session_duration_s=_int(environ, "LIVEAVATAR_MAX_SESSION_SECONDS"),
            keep_alive_interval_s=float(_int(environ, "LIVEAVATAR_KEEP_ALIVE_SECONDS") or 60),
        )


def _flag(environ: Mapping[str, str], name: str) -> bool:
    value = (environ.get(name) or "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _int(environ: Mapping[str, str], name: str) -> int | None:
    value = (environ.get(name) or "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"{name} must be positive, got {number}")
    return number
