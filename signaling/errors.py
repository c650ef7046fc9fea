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


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            return error_response(413, "body_too_large", f"the body is larger than {request.app[MAX_BODY_BYTES]} bytes")
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason or code)
    except DATABASE_UNAVAILABLE as exc:
        log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
        return error_response(503, "database_unavailable", "the database is not reachable; try again shortly")
    except Exception:
        # An unexpected failure is our bug; the client still gets JSON and the server lives on.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error")


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
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return body
