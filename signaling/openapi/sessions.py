"""/api/v1/sessions: create, offer/answer, trickle ICE, typed turns, inspect, hang up, events."""

from __future__ import annotations

from signaling.openapi.schema import (
    BOOLEAN, DATE_TIME, INTEGER, NUMBER, STRING, UUID, array, json_content, nullable, obj, operation, path_param,
    query_param, ref,
)

TAG = "sessions"
SESSION_ID = path_param("session_id", "the session's id (a foreign or unknown one is 404 session_not_found)")
_QUALITY = {"type": "string", "enum": ["low", "medium", "high"]}

SCHEMAS = {
    "IceServer": obj(
        {"urls": {"anyOf": [STRING, array(STRING)]}, "username": STRING, "credential": STRING}, required=["urls"]
    ),
    "AvatarOpened": obj(
        {
            "engine": STRING, "status": STRING, "avatar_session_id": UUID, "heygen_session_id": STRING,
            "avatar_id": STRING, "error": STRING,
        },
        required=["engine", "status"],
    ),
    "CreatedSession": obj(
        {
            "session_id": UUID, "ice_servers": array(ref("IceServer")), "expires_at": DATE_TIME,
            "agent_session_id": STRING, "avatar": ref("AvatarOpened"),
        },
        required=["session_id", "ice_servers", "expires_at"],
    ),
    "SessionRecord": obj(
        {
            "session_id": UUID, "user_id": STRING,
            "status": {"type": "string", "enum": ["created", "connecting", "connected", "ended"]},
            "end_reason": nullable(STRING), "agent_session_id": nullable(STRING),
            "avatar_session_id": nullable(STRING), "avatar_status": nullable(STRING), "created_at": nullable(DATE_TIME),
            "expires_at": nullable(DATE_TIME), "connected_at": nullable(DATE_TIME), "ended_at": nullable(DATE_TIME),
        },
        required=["session_id", "user_id", "status", "created_at", "expires_at"],
    ),
    "CallState": {"type": "string", "enum": ["new", "connecting", "connected", "ending", "ended"]},
    "Ended": obj({"status": {"const": "ended"}}),
}

_CALL_ERRORS = {404: "session_not_found", 409: "session_ended, session_not_live, session_expired, invalid_state"}
_NODE = "node_unreachable (the call's node does not answer)"

OPERATIONS = {
    ("POST", "/api/v1/sessions"): operation(
        "Create a session (and its avatar session with avatar: true)",
        tag=TAG,
        body=obj(
            {"avatar": BOOLEAN, "avatar_id": nullable(STRING), "quality": _QUALITY, "voice_id": nullable(STRING)},
            required=[],
        ),
        body_required=False,
        ok={201: ("the session; offer its call before expires_at", json_content(ref("CreatedSession")))},
        errors={
            400: "invalid_avatar, invalid_voice", 403: "quota_exceeded", 429: "too_many_calls",
            503: "draining",
        },
        description="Fields the body leaves out come from the caller's preferences.",
    ),
    ("GET", "/api/v1/sessions/{session_id}"): operation(
        "A session's stored record and its call's state",
        tag=TAG,
        params=[SESSION_ID],
        ok={200: ("the session", json_content({"allOf": [ref("SessionRecord"), obj({"call_state": ref("CallState")})]}))},
        errors={404: "session_not_found", 503: _NODE},
    ),
    ("DELETE", "/api/v1/sessions/{session_id}"): operation(
        "Hang up: end the session and its call",
        tag=TAG,
        params=[SESSION_ID],
        ok={200: ("ended (also when it had ended before)", json_content(ref("Ended")))},
        errors={404: "session_not_found", 503: _NODE},
    ),
    ("POST", "/api/v1/sessions/{session_id}/offer"): operation(
        "Send the browser's SDP offer; returns the answer with all our candidates",
        tag=TAG,
        params=[SESSION_ID],
        body=obj({"sdp": STRING, "type": {"const": "offer"}}, required=["sdp"]),
        ok={200: ("the SDP answer", json_content(obj({"sdp": STRING, "type": {"const": "answer"}})))},
        errors={400: "invalid_sdp", **_CALL_ERRORS, 503: "at_capacity, draining"},
    ),
    ("POST", "/api/v1/sessions/{session_id}/ice"): operation(
        "Trickle an ICE candidate (an empty candidate ends them)",
        tag=TAG,
        params=[SESSION_ID],
        body=obj(
            {"candidate": STRING, "sdpMid": nullable(STRING), "sdpMLineIndex": nullable(INTEGER)}, required=["candidate"]
        ),
        ok={204: ("taken", None)},
        errors={400: "invalid_candidate", **_CALL_ERRORS, 429: "too_many_candidates", 503: _NODE},
    ),
    ("POST", "/api/v1/sessions/{session_id}/messages"): operation(
        "A typed turn on the live call: the agent's reply is spoken and returned",
        tag=TAG,
        params=[SESSION_ID],
        body=obj({"text": {"type": "string", "minLength": 1}}),
        ok={200: ("the reply", json_content(obj({"text": STRING, "reply": STRING})))},
        errors={400: "invalid_text", **_CALL_ERRORS, 409: _CALL_ERRORS[409] + ", text_not_supported", 503: _NODE},
    ),
    ("GET", "/api/v1/sessions/{session_id}/events"): operation(
        "The call's events as JSON over a WebSocket",
        tag=TAG,
        params=[
            SESSION_ID,
            query_param("access_token", "the JWT, for browsers that cannot set headers on a WebSocket", STRING),
        ],
        ok={101: ("switching to the WebSocket: state, usage, transcript, reply, turn_metrics, error ... events", None)},
        errors={404: "session_not_found", 429: "too_many_websockets"},
        description="Send `{\"type\": \"ping\"}` for `{\"type\": \"pong\"}`; the socket closes after the `ended` state.",
    ),
    ("GET", "/api/v1/sessions/{session_id}/usage"): operation(
        "A session's metered tracks (live, or as stored once ended)",
        tag="usage",
        params=[SESSION_ID],
        ok={200: ("the usage", json_content(ref("SessionUsage")))},
        errors={404: "session_not_found", 503: _NODE},
    ),
}

SCHEMAS["SessionUsage"] = obj(
    {
        "session_id": UUID,
        "tracks": array(
            obj(
                {
                    "track": STRING, "kind": STRING, "direction": STRING, "media_us": INTEGER, "seconds": NUMBER,
                    "streamed_seconds": NUMBER,
                }
            )
        ),
        "connected_seconds": NUMBER,
        "speech_seconds": NUMBER,
    }
)
