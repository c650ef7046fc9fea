"""Conversation history: past sessions, their messages, and text chat with a session's agent."""

from __future__ import annotations

from signaling.openapi.schema import (
    BOOLEAN, DATE_TIME, INTEGER, STRING, UUID, array, json_content, nullable, obj, operation, query_param, ref,
)
from signaling.openapi.sessions import SESSION_ID

TAG = "history"
_CURSOR = query_param("cursor", "next_cursor of the previous page (opaque)", STRING)
_PAGE_ERRORS = {400: "invalid_limit, invalid_cursor"}

SCHEMAS = {
    "Message": obj(
        {
            "message_id": STRING, "session_id": UUID, "role": {"enum": ["user", "agent"]},
            "source": {"enum": ["voice", "text"]}, "content": STRING, "created_at": DATE_TIME,
            "turn_start_ms": nullable(INTEGER), "turn_end_ms": nullable(INTEGER), "interrupted": BOOLEAN,
            "spoken_characters": nullable(INTEGER), "generated_characters": nullable(INTEGER),
        },
        description="An agent reply cut short holds what was spoken (interrupted: true), not what was generated.",
    ),
    "SessionSummary": {
        "allOf": [
            ref("SessionRecord"),
            obj(
                {
                    "usage": obj({}, required=[], additionalProperties={"type": "number"}),
                    "message_count": {"type": "integer", "minimum": 0},
                }
            ),
        ]
    },
}

OPERATIONS = {
    ("GET", "/api/v1/sessions"): operation(
        "The caller's sessions, newest first, with their usage and message counts",
        tag=TAG,
        params=[query_param("limit", "page size (default 20)", {"type": "integer", "minimum": 1, "maximum": 100}), _CURSOR],
        ok={
            200: (
                "a page of sessions",
                json_content(obj({"sessions": array(ref("SessionSummary")), "next_cursor": nullable(STRING)})),
            )
        },
        errors=_PAGE_ERRORS,
    ),
    ("GET", "/api/v1/sessions/{session_id}/messages"): operation(
        "A session's conversation, oldest first",
        tag=TAG,
        params=[
            SESSION_ID,
            query_param("limit", "page size (default 50)", {"type": "integer", "minimum": 1, "maximum": 100}),
            _CURSOR,
        ],
        ok={
            200: (
                "a page of messages",
                json_content(
                    obj({"session_id": UUID, "messages": array(ref("Message")), "next_cursor": nullable(STRING)})
                ),
            )
        },
        errors={**_PAGE_ERRORS, 404: "session_not_found"},
    ),
    ("POST", "/api/v1/chat/messages"): operation(
        "A text message to a session's agent, with or without a live call",
        tag=TAG,
        body=obj(
            {"content": {"type": "string", "minLength": 1}, "session_id": UUID, "enable_avatar_speech": BOOLEAN},
            required=["content", "session_id"],
        ),
        ok={
            200: (
                "the agent's reply",
                json_content(
                    obj(
                        {
                            "message_id": STRING, "user_message_id": STRING, "content": STRING, "session_id": UUID,
                            "spoken": BOOLEAN, "spoken_by": nullable({"enum": ["avatar", "voice"]}), "created_at": DATE_TIME,
                        }
                    )
                ),
            )
        },
        errors={
            400: "invalid_content, invalid_session, invalid_enable_avatar_speech", 403: "quota_exceeded",
            404: "session_not_found", 409: "text_not_supported (no agent), session_ended, invalid_state",
            502: "agent_failed", 503: "node_unreachable",
        },
        description="With a live call the call's conversation answers; it speaks the reply only with enable_avatar_speech.",
    ),
}
