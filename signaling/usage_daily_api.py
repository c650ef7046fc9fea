"""GET /api/v1/usage/daily: the caller's UTC month so far, per day and usage type, with each monthly limit."""

from __future__ import annotations

from aiohttp import web

from signaling import keys
from signaling.auth import principal_of
from storage.usage import USAGE_TYPES, presented, unit_of
from storage.usage_daily import DailyUsageRepository

routes = web.RouteTableDef()


@routes.get("/api/v1/usage/daily")
async def my_daily_usage(request: web.Request) -> web.Response:
    principal = principal_of(request)
    # A repository per request is only a wrapper around the shared pool.
    month = await DailyUsageRepository(request.app[keys.DB].pool).month(principal.user_id)
    usage = {
        usage_type: {
            "unit": unit_of(usage_type),
            "limit": presented(usage_type, month.limits[usage_type]),
            "daily": [presented(usage_type, amount) for amount in month.daily[usage_type]],
        }
        for usage_type in USAGE_TYPES
    }
    return web.json_response(
        {
            "user_id": principal.user_id,
            "period_start": month.period_start.isoformat(),
            "days": [day.isoformat() for day in month.days],
            "usage": usage,
        }
    )
