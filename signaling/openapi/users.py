"""The caller as a user (plan, limits, preferences) and the voices and avatars to choose from."""

from __future__ import annotations

from signaling.openapi.schema import BOOLEAN, STRING, array, json_content, nullable, obj, operation, ref

TAG = "users"
_PREFERENCE_FIELDS = {
    "avatar_id": nullable(STRING),
    "voice_id": nullable(STRING),
    "quality": {"type": "string", "enum": ["low", "medium", "high"]},
    "enable_avatar": BOOLEAN,
}

SCHEMAS = {
    "Preferences": obj(_PREFERENCE_FIELDS, description="Defaults of new sessions"),
    "PreferencesChange": obj(_PREFERENCE_FIELDS, required=[], additionalProperties=False),
}

OPERATIONS = {
    ("GET", "/api/v1/users/me"): operation(
        "The caller: plan, monthly limits and preferences",
        tag=TAG,
        ok={
            200: (
                "the caller",
                json_content(obj({"user_id": STRING, "plan": STRING, "limits": ref("Limits"), "preferences": ref("Preferences"),
                     "preferences_saved": BOOLEAN})),
            )
        },
    ),
    ("PUT", "/api/v1/users/me/preferences"): operation(
        "Change any subset of the caller's preferences",
        tag=TAG,
        body=ref("PreferencesChange"),
        ok={200: ("the stored preferences", json_content(ref("Preferences")))},
        errors={400: "invalid_preferences"},
    ),
    ("GET", "/api/v1/voices"): operation(
        "The voices of this server's TTS engine",
        tag=TAG,
        ok={
            200: (
                "the voices",
                json_content(
                    obj(
                        {
                            "voices": array(obj({"voice_id": STRING, "name": STRING, "language": STRING, "engine": nullable(STRING)})),
                            "default_voice_id": nullable(STRING),
                        }
                    )
                ),
            )
        },
    ),
    ("GET", "/api/v1/avatars"): operation(
        "The avatars of this server's avatar engine",
        tag=TAG,
        ok={
            200: (
                "the avatars",
                json_content(
                    obj(
                        {
                            "avatars": array(obj({"avatar_id": STRING, "name": STRING, "engine": STRING})),
                            "default_avatar_id": nullable(STRING),
                        }
                    )
                ),
            )
        },
    ),
}
