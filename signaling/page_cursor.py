"""Opaque page cursors: a position in one listing, signed, so only cursors this service issued are taken.

A cursor names its listing (`scope`, e.g. the session whose messages it pages), so one issued for a
listing is refused by another. The key is derived from the JWT secret, which every node shares: a
cursor from one node works on any other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from signaling.errors import ApiError

_VERSION = "1"
_MAC_BYTES = 12


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"page-cursor/v1", hashlib.sha256).digest()


def _mac(secret: str, body: bytes) -> bytes:
    return hmac.new(_key(secret), body, hashlib.sha256).digest()[:_MAC_BYTES]


def issue(secret: str, scope: str, position: str) -> str:
    body = f"{_VERSION}\n{scope}\n{position}".encode()
    return base64.urlsafe_b64encode(body + _mac(secret, body)).decode().rstrip("=")


def read(secret: str, scope: str, cursor: str) -> str:
    """The position `cursor` names in the listing `scope`, or 400 `invalid_cursor`."""
    invalid = ApiError(400, "invalid_cursor", "the cursor is not one this listing issued")
    if not cursor or len(cursor) > 512:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError) as exc:
        raise invalid from exc
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, _mac(secret, body)):
        raise invalid
    try:
        version, cursor_scope, position = body.decode().split("\n")
    except (UnicodeDecodeError, ValueError) as exc:
        raise invalid from exc
    if version != _VERSION or cursor_scope != scope:
        raise invalid
    return position
