"""Usage and quotas: the caller's month (total and per day) and admins setting limits."""

from __future__ import annotations

from signaling.openapi.schema import STRING, array, json_content, nullable, obj, operation, path_param, ref

TAG = "usage"
USAGE_TYPES = (
    "mic_audio_seconds", "speech_audio_seconds", "avatar_video_seconds", "stt_seconds", "tts_characters", "agent_tokens",
)
_AMOUNT = nullable({"type": "number", "minimum": 0})


def _by_type(schema: dict[str, object]) -> dict[str, object]:
    return obj({t: schema for t in USAGE_TYPES}, required=[], additionalProperties=schema)


SCHEMAS = {
    "Limits": obj(
        {t: _AMOUNT for t in USAGE_TYPES}, required=[], additionalProperties=_AMOUNT,
        description="usage type -> monthly limit (seconds for *_seconds, counts otherwise); null is unlimited",
    ),
    "MonthUsage": obj(
        {
            "user_id": STRING,
            "usage": _by_type(obj({"unit": STRING, "used": _AMOUNT, "limit": _AMOUNT, "remaining": _AMOUNT})),
        }
    ),
    "DailyUsage": obj(
        {
            "user_id": STRING,
            "period_start": {"type": "string", "format": "date"},
            "days": array({"type": "string", "format": "date"}),
            "usage": _by_type(obj({"unit": STRING, "limit": _AMOUNT, "daily": array({"type": "number"})})),
        }
    ),
}

OPERATIONS = {
    ("GET", "/api/v1/usage"): operation(
        "The caller's usage this month, per usage type, against its limits",
        tag=TAG,
        ok={200: ("the month's usage", json_content(ref("MonthUsage")))},
    ),
    ("GET", "/api/v1/usage/daily"): operation(
        "The caller's usage this UTC month per day and usage type, with each monthly limit",
        tag=TAG,
        ok={200: ("the month, day by day", json_content(ref("DailyUsage")))},
    ),
    ("PUT", "/api/v1/admin/users/{user_id}/quota"): operation(
        "Set a user's monthly limits (admin role)",
        tag="admin",
        params=[path_param("user_id", "the user whose limits to set", {"type": "string", "minLength": 1, "maxLength": 255})],
        body=obj(
            {
                "limits": {
                    "type": "object", "minProperties": 1, "additionalProperties": False,
                    "properties": {t: _AMOUNT for t in USAGE_TYPES},
                }
            }
        ),
        ok={200: ("the limits now in force", json_content(obj({"user_id": STRING, "limits": ref("Limits")})))},
        errors={400: "invalid_user, invalid_limits", 403: "forbidden", 404: "not_found (no such path)"},
    ),
}
