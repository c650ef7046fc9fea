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


# Our own words for each way a token fails: the library's text never reaches the client.
# Checked in order, subclasses before their bases.
_TOKEN_FAILURES: tuple[tuple[type[jwt.InvalidTokenError], str, str], ...] = (
    (jwt.ExpiredSignatureError, "token_expired", "the access token has expired"),
    (jwt.ImmatureSignatureError, "invalid_token", "the access token is not valid yet"),
    (jwt.InvalidAudienceError, "invalid_token", "the access token is for another audience"),
    (jwt.InvalidIssuerError, "invalid_token", "the access token is from another issuer"),
    (jwt.InvalidAlgorithmError, "invalid_token", "the access token must be signed with HS256"),
    (jwt.InvalidSignatureError, "invalid_token", "the access token's signature does not match"),
    (jwt.DecodeError, "invalid_token", "the access token is not a well-formed JWT"),
)


class TokenAuthority:
    def __init__(self, secret: str, audience: str = "authenticated", issuer: str | None = None) -> None:
        self._secret = secret
        self._audience = audience
        self._issuer = issuer
        self._required = ["sub", "exp", "aud"] + (["iss"] if issuer else [])

    def issue(self, user_id: str, ttl_seconds: int = 3600, *, admin: bool = False) -> str:
        now = int(time.time())
        claims: dict[str, object] = {
            "sub": user_id,
            "aud": self._audience,
            "role": "authenticated",
            "iat": now,
            "exp": now + ttl_seconds,
        }
        if self._issuer:
            claims["iss"] = self._issuer
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
                issuer=self._issuer,
                options={"require": self._required},
            )
        except jwt.MissingRequiredClaimError as exc:
            claim = exc.claim if exc.claim in self._required else "a required"
            raise ApiError(401, "invalid_token", f"the access token has no {claim} claim") from exc
        except jwt.InvalidTokenError as exc:
            for kind, code, message in _TOKEN_FAILURES:
                if isinstance(exc, kind):
                    raise ApiError(401, code, message) from exc
            raise ApiError(401, "invalid_token", "the access token is not valid") from exc
        user_id = claims.get("sub")
        if not isinstance(user_id, str) or not user_id or len(user_id) > 255 or "\x00" in user_id:
            raise ApiError(401, "invalid_token", "the access token has no usable sub claim")
        app_metadata = claims.get("app_metadata")
        is_admin = isinstance(app_metadata, dict) and app_metadata.get("role") == "admin"
        return Principal(user_id=user_id, is_admin=is_admin)


# Browsers cannot set headers on a WebSocket, so this one route also takes `?access_token=`.
# Elsewhere a token in the URL would end up in logs, histories and Referer headers.
QUERY_TOKEN_ROUTE = "/api/v1/sessions/{session_id}/events"


def bearer_token(request: web.BaseRequest) -> str:
    """The token of `Authorization: Bearer <token>`, or "" without one."""
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


def _takes_query_token(request: web.Request) -> bool:
    route = request.match_info.route
    return (
        request.method == "GET"
        and route.resource is not None
        and route.resource.canonical == QUERY_TOKEN_ROUTE
        and request.headers.get("Upgrade", "").lower() == "websocket"
    )


def verify_once(request: web.Request, token: str) -> Principal:
    """The token's principal, checked once per request (the rate limiter and the route both need it)."""
    cached = request.get(_VERIFIED)
    if cached is not None and cached[0] == token:
        return cached[1]
    principal = request.app[TOKENS].verify(token)
    request[_VERIFIED] = (token, principal)
    return principal


def principal_of(request: web.Request) -> Principal:
    """The caller, from `Authorization: Bearer` or, on the events WebSocket only, `?access_token=`."""
    token = bearer_token(request)
    if not token and _takes_query_token(request):
        token = request.query.get("access_token", "")
    if not token:
        raise ApiError(401, "unauthorized", "an access token is required (Authorization: Bearer <token>)")
    return verify_once(request, token)


TOKENS = web.AppKey("tokens", TokenAuthority)
_VERIFIED = web.RequestKey("verified_token", tuple)  # (token, principal), for this request only
