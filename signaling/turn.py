"""Short-lived TURN credentials in the REST-API form that coturn's `use-auth-secret` checks.

The username is `expiry:name` (expiry in Unix seconds) and the credential is the base64 HMAC-SHA1 of the
username keyed with the shared secret, so coturn verifies it without asking us and refuses it once expired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_TTL_S = 3600

# What aiortc can parse as well as browsers: a host name or IPv4 address, an optional port and transport.
_TURN_URL = re.compile(r"turns?:[^?:\s/]+(:\d{1,5})?(\?transport=(udp|tcp))?")
# User ids made only of these pass into the TURN username as they are. Anything else is replaced by a hash:
# a ':' (coturn would take it, but then a user "server:x" would share the server's name in coturn's logs
# and per-user quota), non-ASCII (SASLprep may rewrite it on one side only), an overlong id (STUN caps
# usernames at 513 bytes). Hashed names start with '~', which plain ones never contain.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,128}")


@dataclass(frozen=True)
class TurnConfig:
    urls: tuple[str, ...]
    secret: str = field(repr=False)  # kept out of logs and tracebacks
    ttl_s: int = DEFAULT_TTL_S

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("TURN_URLS must name at least one turn: or turns: URL")
        for url in self.urls:
            if not _TURN_URL.fullmatch(url):
                raise ValueError(
                    f"TURN_URLS entry {url!r} is not turn:HOST[:PORT][?transport=udp|tcp] (or turns:)"
                )
        if not self.secret:
            raise ValueError("TURN_SECRET must not be empty")
        if self.ttl_s <= 0:
            raise ValueError(f"TURN_TTL_S must be a whole number of seconds > 0, got {self.ttl_s}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TurnConfig | None:
        """None when TURN is not configured; a half configuration is an error, not a silent STUN-only server."""
        urls = tuple(u.strip() for u in environ.get("TURN_URLS", "").split(",") if u.strip())
        secret = environ.get("TURN_SECRET", "")
        if not urls and not secret:
            return None
        if not urls or not secret:
            raise ValueError("TURN_URLS and TURN_SECRET go together: set both or neither")
        raw_ttl = environ.get("TURN_TTL_S", "").strip() or str(DEFAULT_TTL_S)
        try:
            ttl_s = int(raw_ttl)
        except ValueError:
            raise ValueError(f"TURN_TTL_S must be a whole number of seconds > 0, got {raw_ttl!r}") from None
        return cls(urls=urls, secret=secret, ttl_s=ttl_s)

    def credentials_for_name(self, name: str, now: float) -> dict[str, object]:
        """The ICE server entry for `name`, valid until now + ttl_s; `name` is used exactly as given."""
        username = f"{int(now) + self.ttl_s}:{name}"
        digest = hmac.new(self.secret.encode(), username.encode(), hashlib.sha1).digest()
        return {"urls": list(self.urls), "username": username, "credential": base64.b64encode(digest).decode()}

    def turn_credentials(self, user_id: str, now: float) -> dict[str, object]:
        """A browser's entry: `expiry:user` where user is the user id, or its hash when unsafe (see above)."""
        return self.credentials_for_name(turn_user_name(user_id), now)

    def server_credentials(self, node_id: str, now: float) -> dict[str, object]:
        """The server's own entry, `expiry:server:<node>`: no user name has a ':', so none can look like it."""
        return self.credentials_for_name(f"server:{node_id}", now)


def turn_user_name(user_id: str) -> str:
    if _PLAIN_NAME.fullmatch(user_id):
        return user_id
    return "~" + hashlib.sha256(user_id.encode()).hexdigest()[:32]


def session_ice_servers(
    static: list[dict[str, object]], turn: TurnConfig | None, user_id: str, now: float
) -> list[dict[str, object]]:
    """What a new session hands its browser: the static servers (STUN) and, with TURN, this user's entry."""
    return [*static, turn.turn_credentials(user_id, now)] if turn is not None else list(static)
