"""Conversation history over real HTTP: messages paged by cursor, the session list, chat without a call."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from tests.conftest import RunningServer
from tests.rtc_client import RtcClient

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def new_session(http: aiohttp.ClientSession, server: RunningServer, headers: dict[str, str]) -> str:
    async with http.post(f"{server.base_url}/api/v1/sessions", json={}, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["session_id"])


async def chat(
    http: aiohttp.ClientSession, server: RunningServer, headers: dict[str, str], session_id: str, content: str, **extra: object
) -> dict[str, object]:
    body = {"content": content, "session_id": session_id, **extra}
    async with http.post(f"{server.base_url}/api/v1/chat/messages", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def get_json(http: aiohttp.ClientSession, url: str, headers: dict[str, str], status: int = 200) -> dict[str, object]:
    async with http.get(url, headers=headers) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json()


async def all_messages(http: aiohttp.ClientSession, server: RunningServer, headers: dict[str, str], session_id: str, limit: int = 100) -> list[dict[str, object]]:
    url = f"{server.base_url}/api/v1/sessions/{session_id}/messages?limit={limit}"
    messages: list[dict[str, object]] = []
    cursor: object = None
    while True:
        page = await get_json(http, url + (f"&cursor={cursor}" if cursor else ""), headers)
        messages += page["messages"]  # type: ignore[operator]
        cursor = page["next_cursor"]
        if cursor is None:
            return messages


async def test_messages_page_by_cursor_in_order_without_gaps(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    headers = voice_server.auth()
    session_id = await new_session(http, voice_server, headers)
    words = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape"]
    answers = [await chat(http, voice_server, headers, session_id, f"Repeat after me: {word} pie") for word in words]
    for word, answer in zip(words, answers):
        assert answer["session_id"] == session_id and answer["spoken"] is False and answer["spoken_by"] is None
        assert word in str(answer["content"]).lower(), answer

    url = f"{voice_server.base_url}/api/v1/sessions/{session_id}/messages?limit=4"
    pages, cursor = [], None
    while True:
        page = await get_json(http, url + (f"&cursor={cursor}" if cursor else ""), headers)
        assert page["session_id"] == session_id
        pages.append(page["messages"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [4, 4, 4, 2]
    messages = [m for p in pages for m in p]
    assert len({m["message_id"] for m in messages}) == 14
    # Oldest first: each chat's question, then its answer, with the ids the chat route gave.
    expected_ids = [i for a in answers for i in (a["user_message_id"], a["message_id"])]
    assert [m["message_id"] for m in messages] == expected_ids
    assert [m["role"] for m in messages] == ["user", "agent"] * 7
    for word, question, reply, answer in zip(words, messages[::2], messages[1::2], answers):
        assert question["content"] == f"Repeat after me: {word} pie" and question["source"] == "text"
        assert question["turn_start_ms"] is None and question["turn_end_ms"] is None
        assert reply["content"] == answer["content"] and reply["source"] == "text"
        assert reply["interrupted"] is False and reply["generated_characters"] == len(str(reply["content"]))
        assert reply["created_at"] == answer["created_at"]
    stamps = [m["created_at"] for m in messages]
    assert stamps == sorted(stamps)
    # The default page holds them all.
    whole = await get_json(http, f"{voice_server.base_url}/api/v1/sessions/{session_id}/messages", headers)
    assert [m["message_id"] for m in whole["messages"]] == expected_ids and whole["next_cursor"] is None


async def test_foreign_and_unknown_sessions_are_404(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    owner = voice_server.auth()
    session_id = await new_session(http, voice_server, owner)
    await chat(http, voice_server, owner, session_id, "hello")
    stranger = voice_server.auth()
    for sid in (session_id, str(uuid.uuid4()), "not-a-uuid"):
        body = await get_json(http, f"{voice_server.base_url}/api/v1/sessions/{sid}/messages", stranger, 404)
        assert body["error"]["code"] == "session_not_found"
    body = {"content": "hi", "session_id": session_id}
    async with http.post(f"{voice_server.base_url}/api/v1/chat/messages", json=body, headers=stranger) as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "session_not_found"
    # The stranger's list does not show it; nothing was added to it.
    listed = await get_json(http, f"{voice_server.base_url}/api/v1/sessions", stranger)
    assert listed["sessions"] == []
    assert len(await all_messages(http, voice_server, owner, session_id)) == 2
    async with http.get(f"{voice_server.base_url}/api/v1/sessions/{session_id}/messages") as resp:
        assert resp.status == 401


async def test_bad_limits_and_cursors_are_400(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    headers = voice_server.auth()
    session_id = await new_session(http, voice_server, headers)
    other_id = await new_session(http, voice_server, headers)
    for sid in (session_id, other_id):
        for text in ("one", "two"):
            await chat(http, voice_server, headers, sid, text)
    base = f"{voice_server.base_url}/api/v1/sessions/{session_id}/messages"
    for limit in ("0", "101", "-1", "abc", "2.5", ""):
        body = await get_json(http, f"{base}?limit={limit}", headers, 400)
        assert body["error"]["code"] == "invalid_limit", limit
        body = await get_json(http, f"{voice_server.base_url}/api/v1/sessions?limit={limit}", headers, 400)
        assert body["error"]["code"] == "invalid_limit", limit
    good = (await get_json(http, f"{base}?limit=1", headers))["next_cursor"]
    assert isinstance(good, str)
    other = (await get_json(http, f"{voice_server.base_url}/api/v1/sessions/{other_id}/messages?limit=1", headers))["next_cursor"]
    listing = (await get_json(http, f"{voice_server.base_url}/api/v1/sessions?limit=1", headers))["next_cursor"]
    assert isinstance(other, str) and isinstance(listing, str)
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    for cursor in ("garbage", "%00", tampered, other, listing, "MQ"):
        body = await get_json(http, f"{base}?cursor={cursor}", headers, 400)
        assert body["error"]["code"] == "invalid_cursor", cursor
    # Another user's cursor for the session list is not this user's.
    body = await get_json(http, f"{voice_server.base_url}/api/v1/sessions?cursor={listing}", voice_server.auth(), 400)
    assert body["error"]["code"] == "invalid_cursor"
    # The cursor that was issued works, and pages on.
    page = await get_json(http, f"{base}?limit=1&cursor={good}", headers)
    assert [m["content"] for m in page["messages"]] != [] and page["messages"][0]["role"] == "agent"


async def test_session_list_is_newest_first_with_usage_and_message_count(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    headers = voice_server.auth(user)
    created = [await new_session(http, voice_server, headers) for _ in range(3)]
    await chat(http, voice_server, headers, created[1], "hello there")
    await chat(http, voice_server, headers, created[1], "what time is it?")
    url = f"{voice_server.base_url}/api/v1/sessions?limit=2"
    first = await get_json(http, url, headers)
    assert isinstance(first["next_cursor"], str)
    second = await get_json(http, f"{url}&cursor={first['next_cursor']}", headers)
    assert second["next_cursor"] is None
    sessions = first["sessions"] + second["sessions"]  # type: ignore[operator]
    assert [s["session_id"] for s in sessions] == created[::-1]
    assert [s["created_at"] for s in sessions] == sorted((s["created_at"] for s in sessions), reverse=True)
    by_id = {s["session_id"]: s for s in sessions}
    assert [by_id[sid]["message_count"] for sid in created] == [0, 4, 0]
    for summary in sessions:
        assert summary["user_id"] == user and summary["status"] == "created"
        assert {"ended_at", "end_reason", "expires_at"} <= set(summary)
        assert set(summary["usage"]) >= {"mic_audio_seconds", "tts_characters", "agent_tokens"}
    # The chats' agent tokens are metered to their session (and to the user's month).
    assert by_id[created[1]]["usage"]["agent_tokens"] > 0
    assert by_id[created[0]]["usage"]["agent_tokens"] == 0
    month = await get_json(http, f"{voice_server.base_url}/api/v1/usage", headers)
    assert month["usage"]["agent_tokens"]["used"] == by_id[created[1]]["usage"]["agent_tokens"]


async def test_chat_validates_its_body_and_quota(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    headers = voice_server.auth(user)
    session_id = await new_session(http, voice_server, headers)
    url = f"{voice_server.base_url}/api/v1/chat/messages"
    too_long = "a" * (voice_server.settings.limits.max_message_chars + 1)
    cases = [
        ({"content": "", "session_id": session_id}, "invalid_content"),
        ({"content": "   ", "session_id": session_id}, "invalid_content"),
        ({"content": 42, "session_id": session_id}, "invalid_content"),
        ({"content": too_long, "session_id": session_id}, "invalid_content"),
        ({"content": "nul \u0000 inside", "session_id": session_id}, "invalid_content"),
        ({"content": "lone \ud800 surrogate", "session_id": session_id}, "invalid_content"),
        ({"content": "hi", "session_id": session_id, "enable_avatar_speech": "yes"}, "invalid_enable_avatar_speech"),
        ({"content": "hi"}, "invalid_session"),
        ({"content": "hi", "session_id": "nope"}, "invalid_session"),
        ({"content": "hi", "session_id": 7}, "invalid_session"),
    ]
    for body, code in cases:
        async with http.post(url, json=body, headers=headers) as resp:
            assert resp.status == 400, body
            assert (await resp.json())["error"]["code"] == code, body
    async with http.post(url, json={"content": "hi", "session_id": str(uuid.uuid4())}, headers=headers) as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "session_not_found"
    admin = {"Authorization": f"Bearer {voice_server.token('history-admin', admin=True)}"}
    quota_url = f"{voice_server.base_url}/api/v1/admin/users/{user}/quota"
    async with http.put(quota_url, json={"limits": {"agent_tokens": 0}}, headers=admin) as resp:
        assert resp.status == 200, await resp.text()
    async with http.post(url, json={"content": "hi", "session_id": session_id}, headers=headers) as resp:
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "quota_exceeded"
    assert await all_messages(http, voice_server, headers, session_id) == []


async def test_chat_before_the_offer_and_after_the_hang_up(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    client = RtcClient(voice_server.base_url, voice_server.token())
    session_id = await client.create_session(http)
    before = await chat(http, voice_server, client.headers, session_id, "Repeat after me: before the call")
    assert "before the call" in str(before["content"]).lower() and before["spoken"] is False
    await client.connect(http)
    await client.wait_connected()
    await client.hangup(http)
    status = (await get_json(http, f"{voice_server.base_url}/api/v1/sessions/{session_id}", client.headers))["status"]
    assert status == "ended"
    after = await chat(http, voice_server, client.headers, session_id, "Repeat after me: after the call")
    assert "after the call" in str(after["content"]).lower() and after["spoken"] is False
    messages = await all_messages(http, voice_server, client.headers, session_id)
    assert [(m["role"], m["source"]) for m in messages] == [("user", "text"), ("agent", "text")] * 2
    assert [m["message_id"] for m in messages] == [
        before["user_message_id"], before["message_id"], after["user_message_id"], after["message_id"]
    ]
    assert messages[3]["content"] == after["content"]


async def test_chat_needs_an_agent(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    headers = loopback_server.auth()
    session_id = await new_session(http, loopback_server, headers)
    body = {"content": "hello", "session_id": session_id}
    async with http.post(f"{loopback_server.base_url}/api/v1/chat/messages", json=body, headers=headers) as resp:
        assert resp.status == 409 and (await resp.json())["error"]["code"] == "text_not_supported"
    # Nothing answered, so nothing is stored.
    assert await all_messages(http, loopback_server, headers, session_id) == []
