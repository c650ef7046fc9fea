"""/api/v1/avatar/sessions: the avatar side of a user session (start, inspect, speak, end)."""

from __future__ import annotations

from signaling.openapi.schema import DATE_TIME, INTEGER, STRING, UUID, array, json_content, nullable, obj, operation, path_param, ref

TAG = "avatar"
AVATAR_SESSION_ID = path_param("avatar_session_id", "the avatar session's id (anyone else's is 404)")
_NOT_FOUND = {404: "avatar_session_not_found"}

SCHEMAS = {
    "StartedAvatarSession": obj(
        {
            "avatar_session_id": UUID, "heygen_session_id": nullable(STRING), "streaming_url": STRING,
            "session_token": STRING, "expires_at": DATE_TIME, "session_id": UUID,
            "ice_servers": array(ref("IceServer")), "avatar": ref("AvatarOpened"),
        }
    ),
    "AvatarSession": obj(
        {
            "avatar_session_id": UUID, "session_id": UUID, "heygen_session_id": nullable(STRING), "provider": STRING,
            "avatar_id": nullable(STRING), "quality": nullable(STRING), "voice_id": nullable(STRING),
            "status": nullable(STRING), "expires_at": nullable(DATE_TIME),
            "total_streaming_time": nullable({"type": "number"}), "quota_consumed": nullable(STRING),
        }
    ),
}

OPERATIONS = {
    ("POST", "/api/v1/avatar/sessions/start"): operation(
        "Start an avatar session with the user session that streams it",
        tag=TAG,
        body=obj(
            {
                "avatar_id": nullable(STRING), "quality": {"type": "string", "enum": ["low", "medium", "high"]},
                "voice_id": nullable(STRING),
            },
            required=[],
        ),
        body_required=False,
        ok={201: ("the avatar session; offer its call at streaming_url/offer", json_content(ref("StartedAvatarSession")))},
        errors={
            400: "invalid_avatar", 403: "quota_exceeded", 429: "too_many_calls",
            502: "avatar_unavailable", 503: "draining",
        },
    ),
    ("GET", "/api/v1/avatar/sessions/{avatar_session_id}"): operation(
        "An avatar session",
        tag=TAG,
        params=[AVATAR_SESSION_ID],
        ok={200: ("the avatar session", json_content(ref("AvatarSession")))},
        errors=_NOT_FOUND,
    ),
    ("POST", "/api/v1/avatar/sessions/{avatar_session_id}/speak"): operation(
        "The avatar says the text word for word on the live call",
        tag=TAG,
        params=[AVATAR_SESSION_ID],
        body=obj({"text": {"type": "string", "minLength": 1}}),
        ok={
            200: (
                "what was said",
                json_content(obj({"text": STRING, "characters": INTEGER, "by": {"enum": ["avatar", "voice"]}})),
            )
        },
        errors={400: "invalid_text", **_NOT_FOUND, 409: "session_ended, invalid_state, text_not_supported", 503: "node_unreachable"},
    ),
    ("DELETE", "/api/v1/avatar/sessions/{avatar_session_id}"): operation(
        "End the avatar session with its call",
        tag=TAG,
        params=[AVATAR_SESSION_ID],
        ok={200: ("ended", json_content(ref("Ended")))},
        errors={**_NOT_FOUND, 503: "node_unreachable"},
    ),
}
