"""Avatar session tokens at rest: AES-256-GCM under named keys, so keys can be rotated.

AVATAR_TOKEN_KEYS lists the keys, newest first, comma-separated, each ``<key id>:<key>``:

    AVATAR_TOKEN_KEYS="2025b:q0Zl...32 bytes in base64...,2025a:Vh3k..."

- key id: 1-32 characters of ``A-Z a-z 0-9 _ -``, unique in the list;
- key: exactly 32 random bytes in base64, standard or URL-safe alphabet, padding optional
  (``python -c "import os, base64; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"``).

The first key encrypts; every listed key decrypts. To rotate: put a new key in front, restart the
servers, run ``python run.py rotate-keys`` (re-encrypts rows under older keys), then drop the old key.

A stored token reads ``enc:v1:<key id>:<nonce>:<ciphertext and tag>`` (URL-safe base64, no padding),
with a fresh 96-bit random nonce each time. The caller's context (which table, column and row the
token belongs to) is authenticated with it, so a ciphertext copied into another row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ENV_NAME = "AVATAR_TOKEN_KEYS"
KEY_BYTES = 32
NONCE_BYTES = 12
DEV_KEY_ID = "dev"
_PREFIX = "enc:"
_VERSION = "v1"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_DEV_KDF_INFO = b"voice-avatar-server: avatar token key (DEV_MODE only)"


class TokenDecryptError(Exception):
    """A stored token could not be decrypted: malformed, unknown key id, wrong row, or tampered with."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional; binascii.Error when it is not base64."""
    normalised = text.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(normalised + "=" * (-len(normalised) % 4), validate=True)


def is_encrypted(stored: str) -> bool:
    return stored.startswith(_PREFIX)


def key_id_of(stored: str) -> str | None:
    """The key id an encrypted token names, or None for plaintext or a malformed token."""
    parts = stored.split(":")
    if len(parts) == 5 and parts[0] + ":" == _PREFIX and parts[1] == _VERSION:
        return parts[2]
    return None


def encrypted_prefix(key_id: str) -> str:
    """What every token encrypted under key_id starts with (for finding rows in SQL)."""
    return f"{_PREFIX}{_VERSION}:{key_id}:"


class TokenCipher:
    """Encrypts under the newest key; decrypts under any listed key."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError(f"{ENV_NAME} lists no keys")
        seen: dict[str, AESGCM] = {}
        for position, (key_id, key) in enumerate(keys, start=1):
            if not _KEY_ID.match(key_id):
                raise ValueError(f"{ENV_NAME} entry {position}: key id must be 1-32 characters of A-Z a-z 0-9 _ -")
            if key_id in seen:
                raise ValueError(f"{ENV_NAME} entry {position}: key id {key_id!r} is listed twice")
            if len(key) != KEY_BYTES:
                raise ValueError(
                    f"{ENV_NAME} entry {position} (key id {key_id!r}): key must be {KEY_BYTES} bytes, got {len(key)}"
                )
            seen[key_id] = AESGCM(key)
        self._keys = seen
        self._newest = keys[0][0]

    @classmethod
    def from_env_value(cls, value: str) -> TokenCipher:
        """Parse AVATAR_TOKEN_KEYS; a ValueError names the bad entry but never shows key material."""
        entries = [entry.strip() for entry in value.split(",")]
        if not any(entries):
            raise ValueError(f"{ENV_NAME} is empty; give at least one <key id>:<base64 key>")
        keys: list[tuple[str, bytes]] = []
        for position, entry in enumerate(entries, start=1):
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not entry or not sep or not key_id or not encoded.strip():
                raise ValueError(f"{ENV_NAME} entry {position} is not <key id>:<base64 key>")
            try:
                key = _b64decode(encoded)
            except (binascii.Error, ValueError):
                raise ValueError(f"{ENV_NAME} entry {position} (key id {key_id!r}): key is not valid base64") from None
            keys.append((key_id, key))
        return cls(keys)

    @classmethod
    def dev(cls, secret: str) -> TokenCipher:
        """A key derived from a dev secret (HKDF-SHA256), id "dev": for DEV_MODE with no keys set.

        Deterministic, so a restarted dev server still reads what it stored; never for production.
        """
        if not secret:
            raise ValueError("the dev secret for the avatar token key is empty")
        key = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_DEV_KDF_INFO).derive(secret.encode())
        return cls([(DEV_KEY_ID, key)])

    def __repr__(self) -> str:
        return f"<TokenCipher key ids {', '.join(self._keys)}>"  # never the keys

    @property
    def newest_key_id(self) -> str:
        return self._newest

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def encrypt(self, plaintext: str, *, context: bytes) -> str:
        _check_context(context)
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self._newest].encrypt(nonce, plaintext.encode("utf-8"), _aad(self._newest, context))
        return f"{_PREFIX}{_VERSION}:{self._newest}:{_b64encode(nonce)}:{_b64encode(sealed)}"

    def decrypt(self, stored: str, *, context: bytes) -> str:
        _check_context(context)
        if not is_encrypted(stored):
            raise TokenDecryptError(
                "the stored token is not encrypted (a plaintext row: run `python run.py rotate-keys`)"
            )
        parts = stored.split(":")
        if len(parts) != 5 or parts[1] != _VERSION:
            raise TokenDecryptError(
                f"the stored token is not in the {_PREFIX}{_VERSION}:<key id>:<nonce>:<ciphertext> form"
            )
        _, _, key_id, nonce_text, sealed_text = parts
        aes = self._keys.get(key_id)
        if aes is None:
            raise TokenDecryptError(
                f"the stored token is under key id {key_id!r}, which {ENV_NAME} does not list"
                f" (listed: {', '.join(self._keys)})"
            )
        try:
            nonce, sealed = _b64decode(nonce_text), _b64decode(sealed_text)
        except (binascii.Error, ValueError):
            raise TokenDecryptError("the stored token's nonce or ciphertext is not base64") from None
        if len(nonce) != NONCE_BYTES:
            raise TokenDecryptError("the stored token's nonce has the wrong length")
        try:
            plaintext = aes.decrypt(nonce, sealed, _aad(key_id, context))
        except InvalidTag:
            raise TokenDecryptError(
                f"the stored token under key id {key_id!r} does not authenticate: tampered with, or copied from another row"
            ) from None
        return plaintext.decode("utf-8")

    @staticmethod
    def is_encrypted(stored: str) -> bool:
        return is_encrypted(stored)

    def needs_rotation(self, stored: str) -> bool:
        """True for plaintext and for ciphertext under any key but the newest."""
        return key_id_of(stored) != self._newest


def _aad(key_id: str, context: bytes) -> bytes:
    # The header is authenticated too, so the version and key id cannot be swapped on their own.
    return f"{_PREFIX}{_VERSION}:{key_id}\x00".encode("ascii") + context


def _check_context(context: bytes) -> None:
    if not isinstance(context, bytes) or not context:
        raise ValueError("a token's context (its table, column and row) must be non-empty bytes")
