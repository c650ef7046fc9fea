"""Every error leaves as JSON {"error": {"code", "message"}} with a 4xx status, never a 500 page."""

from __future__ import annotations

import json
import logging

import asyncpg
from aiohttp import web

log = logging.getLogger(__name__)

MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)

# What asyncpg raises when Postgres is down or restarting, rather than when a query is wrong.
DATABASE_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)
# What Postgres says of text it cannot store (a NUL character): the client's input, so a 400, not our 500.
UNSTORABLE_TEXT = (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s  # sent as Retry-After (429, 503)


def error_response(status: int, code: str, message: str, *, retry_after_s: int | None = None) -> web.Response:
    headers = {"Retry-After": str(max(1, int(retry_after_s)))} if retry_after_s is not None else None
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


# aiohttp's own 4xx (no route, wrong method, ...) get our code and message, not its reason text.
_HTTP_ERRORS = {
    400: ("bad_request", "the request is malformed"),
    401: ("unauthorized", "an access token is required"),
    403: ("forbidden", "this is not allowed"),
    404: ("not_found", "there is nothing at this path"),
    405: ("method_not_allowed", "this path does not take that method"),
    409: ("conflict", "the request conflicts with the current state"),
    415: ("unsupported_media_type", "the body's media type is not supported"),
}


@web.middleware
async def error_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, retry_after_s=exc.retry_after_s)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            return error_response(413, "body_too_large", f"the body is larger than {request.app[MAX_BODY_BYTES]} bytes")
        code, message = _HTTP_ERRORS.get(exc.status, ("http_error", "the request cannot be served"))
        return error_response(exc.status, code, message)
    except UNSTORABLE_TEXT:
        return error_response(400, "invalid_characters", "the request holds a character that cannot be stored (NUL)")
    except DATABASE_UNAVAILABLE as exc:
        log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
        return error_response(503, "database_unavailable", "the database is not reachable; try again shortly")
    except Exception:
        # An unexpected failure is our bug; the client still gets JSON and the server lives on.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error")


class _NotJsonConstant(ValueError):
    pass


def _reject_constant(name: str) -> object:
    # Python's json reads NaN, Infinity and -Infinity; JSON has none of them.
    raise _NotJsonConstant(name)


async def read_json(request: web.Request, *, allow_empty: bool = False) -> dict[str, object]:
    """The body as a JSON object, or a 4xx ApiError that says what is wrong."""
    limit: int = request.app[MAX_BODY_BYTES]
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"the body is larger than {limit} bytes")
    raw = await request.read()  # aiohttp enforces client_max_size while reading
    if not raw.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "invalid_json", "a JSON body is required")
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except _NotJsonConstant as exc:
        raise ApiError(400, "invalid_json", "the body uses NaN or Infinity, which JSON does not have") from exc
    except RecursionError as exc:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from exc
    except ValueError as exc:  # also bad UTF-8 and integers longer than Python converts
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return body


def message_text(value: object, field: str, code: str, max_chars: int) -> str:
    """A text to say or send, stripped; else 400 `code`: empty, too long, or what no engine or Postgres takes."""
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, code, f"`{field}` must be a non-empty string")
    if max_chars and len(value) > max_chars:
        raise ApiError(400, code, f"`{field}` is longer than {max_chars} characters")
    # NUL ends a C string (the TTS engines) and Postgres stores no NUL; a lone surrogate is not UTF-8.
    if "\x00" in value or _has_surrogates(value):
        raise ApiError(400, code, f"`{field}` must be text (no NUL characters or lone surrogates)")
    return value.strip()


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
