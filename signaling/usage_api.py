"""Usage and quota routes: a session's metered tracks, the caller's month, and admins setting limits."""

from __future__ import annotations

import math

from aiohttp import web

from media.call_usage import MeterSample, usage_summary
from signaling import keys
from signaling.auth import principal_of
from signaling.errors import ApiError, read_json
from signaling.sessions_api import load_session, run_op
from storage.usage import TIME_USAGE_TYPES, US_PER_SECOND, USAGE_TYPES, presented, unit_of

routes = web.RouteTableDef()

_INT64_MAX = 2**63 - 1  # limits are stored as Postgres bigint


def _stored_limit(usage_type: str, value: object) -> int:
    """A limit as stored: microseconds for time types, whole units for counts; ApiError if it cannot be."""
    # JSON's 1e400 arrives as inf; ints are always finite (and too big for math.isfinite).
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, "invalid_limits", f"the limit of {usage_type} must be a number >= 0 or null")
    if (isinstance(value, float) and not math.isfinite(value)) or value < 0:
        raise ApiError(400, "invalid_limits", f"the limit of {usage_type} must be a finite number >= 0 or null")
    if usage_type in TIME_USAGE_TYPES:
        stored = value * US_PER_SECOND
        # Comparing a float with an int is exact in Python, so nothing past int64 slips through.
        if stored > _INT64_MAX:
            raise ApiError(400, "invalid_limits", f"the limit of {usage_type} is too large")
        return round(stored)
    if isinstance(value, float) and not value.is_integer():
        raise ApiError(400, "invalid_limits", f"the limit of {usage_type} must be a whole number")
    if value > _INT64_MAX:
        raise ApiError(400, "invalid_limits", f"the limit of {usage_type} is too large")
    return int(value)


@routes.get("/api/v1/sessions/{session_id}/usage")
async def session_usage(request: web.Request) -> web.Response:
    _, record = await load_session(request)
    status, live = await run_op(request, record, "usage", {})
    if status == 200 and live is not None:
        return web.json_response({"session_id": str(record.id), **live})
    rows = await request.app[keys.USAGE].session_meters(record.id)
    samples = [MeterSample(r.meter, r.kind, r.direction, r.usage_type, r.amount) for r in rows]
    return web.json_response({"session_id": str(record.id), **usage_summary(samples)})


@routes.get("/api/v1/usage")
async def my_usage(request: web.Request) -> web.Response:
    principal = principal_of(request)
    period = await request.app[keys.USAGE].period_usage(principal.user_id)
    types = {}
    for usage_type in USAGE_TYPES:
        row = period[usage_type]
        types[usage_type] = {
            "unit": unit_of(usage_type),
            "used": presented(usage_type, row.used),
            "limit": presented(usage_type, row.limit),
            "remaining": presented(usage_type, row.remaining),
        }
    return web.json_response({"user_id": principal.user_id, "usage": types})


@routes.put("/api/v1/admin/users/{user_id}/quota")
async def set_quota(request: web.Request) -> web.Response:
    """Body: {"limits": {"mic_audio_seconds": 600, "tts_characters": null, ...}}; null means unlimited."""
    principal = principal_of(request)
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "setting quotas needs the admin role")
    user_id = request.match_info["user_id"]
    if not user_id or len(user_id) > 255 or "\x00" in user_id:  # Postgres text cannot hold NUL
        raise ApiError(400, "invalid_user", "the user id must be 1 to 255 characters, without NUL")
    body = await read_json(request)
    limits = body.get("limits")
    if not isinstance(limits, dict) or not limits:
        raise ApiError(400, "invalid_limits", "`limits` must be an object of usage type -> limit (or null)")
    stored: dict[str, int | None] = {}
    for usage_type, value in limits.items():
        if usage_type not in USAGE_TYPES:
            raise ApiError(400, "invalid_limits", f"unknown usage type {usage_type!r}; known: {', '.join(USAGE_TYPES)}")
        if value is None:
            stored[usage_type] = None
            continue
        stored[usage_type] = _stored_limit(usage_type, value)
    applied = await request.app[keys.QUOTAS].set_limits(user_id, stored)
    return web.json_response({"user_id": user_id, "limits": {t: presented(t, v) for t, v in applied.items()}})
