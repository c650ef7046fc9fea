"""Supabase-style access tokens: HS256 JWTs whose `sub` is the user id and `aud` is "authenticated"."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from aiohttp import web

from signaling.errors import ApiError


@dataclass(frozen=True)
class Principal:
    user_id: str
    is_admin: bool


class TokenAuthority:
    def __init__(self, secret: str, audience: str = "authenticated") -> None:
        self._secret = secret
        self._audience = audience

    def issue(self, user_id: str, ttl_seconds: int = 3600, *, admin: bool = False) -> str:
        now = int(time.time())
        claims: dict[str, object] = {
            "sub": user_id,
            "aud": self._audience,
            "role": "authenticated",
            "iat": now,
            "exp": now + ttl_seconds,
        }
        if admin:
            claims["app_metadata"] = {"role": "admin"}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=self._audience,
                options={"require": ["sub", "exp", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise ApiError(401, "token_expired", "the access token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise ApiError(401, "invalid_token", f"the access token is not valid: {exc}") from exc
        user_id = claims.get("sub")
        if not isinstance(user_id, str) or not user_id or len(user_id) > 255:
            raise ApiError(401, "invalid_token", "the access token has no usable sub claim")
        app_metadata = claims.get("app_metadata")
        is_admin = isinstance(app_metadata, dict) and app_metadata.get("role") == "admin"
        return Principal(user_id=user_id, is_admin=is_admin)


def principal_of(request: web.Request) -> Principal:
    """The caller, from `Authorization: Bearer` or, for WebSockets only, `?access_token=`."""
    header = request.headers.get("Authorization", "")
    token = ""
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
    elif request.headers.get("Upgrade", "").lower() == "websocket":
        token = request.query.get("access_token", "")
    if not token:
        raise ApiError(401, "unauthorized", "an access token is required (Authorization: Bearer <token>)")
    authority: TokenAuthority = request.app[TOKENS]
    return authority.verify(token)


TOKENS = web.AppKey("tokens", TokenAuthority)
