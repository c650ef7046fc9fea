"""The page's views beside the call, in headless Chromium against the running loopback server.

Preferences are saved to and reloaded from the server; History lists a session made here with its
messages; Usage draws today's metered seconds of a call made by the page itself, against the limit.
Each view is photographed into the test's tmp dir and /tmp/page-shots/ for people to look at.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from storage.database import Database
from storage.quotas import QuotaRepository
from tests.browser import chromium_args, require_chromium, write_wav
from tests.conftest import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

SHARED_SHOTS = Path("/tmp/page-shots")
SECOND = 1_000_000  # µs
# Waits are functions, never bare expressions: Playwright would eval those, which the page's CSP forbids.


@asynccontextmanager
async def page_for(server: RunningServer, user: str, tmp_path: Path, query: str = "") -> AsyncIterator[Any]:
    """The page, signed in as `user` (?access_token=), in a wide window so the views sit beside the call."""
    executable = require_chromium()
    from playwright.async_api import async_playwright

    rate = 48_000
    tone = write_wav(tmp_path / "tone.wav", 9000 * np.sin(2 * np.pi * 440 * np.arange(rate * 10) / rate), rate)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=chromium_args(tone))
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            # A refused request (the error test's 400) is logged by Chromium itself: not a script error.
            page.on(
                "console",
                lambda m: errors.append(m.text) if m.type == "error" and not m.text.startswith("Failed to load resource") else None,
            )
            await page.goto(f"{server.base_url}/?access_token={server.token(user)}{query}")
            yield page
            # No script error (a CSP refusal included) on the way.
            assert errors == [], errors
        finally:
            await browser.close()


async def shoot(page: Any, tmp_path: Path, name: str) -> Path:
    shots = tmp_path / "shots"
    shots.mkdir(exist_ok=True)
    path = shots / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    SHARED_SHOTS.mkdir(exist_ok=True)
    shutil.copy(path, SHARED_SHOTS / path.name)
    return path


async def get_json(http: aiohttp.ClientSession, server: RunningServer, user: str, path: str) -> Any:
    async with http.get(server.base_url + path, headers=server.auth(user)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def post_json(http: aiohttp.ClientSession, server: RunningServer, user: str, path: str, body: Any, status: int = 200) -> Any:
    async with http.post(server.base_url + path, json=body, headers=server.auth(user)) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json()


async def test_usage_view_draws_todays_call_against_the_limit(
    loopback_server: RunningServer, database: Database, tmp_path: Path
) -> None:
    user = f"page-usage-{uuid.uuid4().hex[:8]}"
    # A small microphone limit, so the limit line sits on the same scale as a few seconds of call.
    await QuotaRepository(database.pool).set_limits(user, {"mic_audio_seconds": 12 * SECOND})
    async with page_for(loopback_server, user, tmp_path, "&avatar=0") as page:
        # A real call from the page itself: the fake microphone's tone is metered as it streams.
        await page.click("#connect")
        await page.wait_for_function("() => document.querySelector('#status').textContent === 'connected'", timeout=20_000)
        await asyncio.sleep(4.0)
        await page.click("#hangup")
        await page.wait_for_function("() => document.querySelector('#status').textContent === 'ended'", timeout=10_000)
        session_id = await page.evaluate("window.voiceCall.sessionId")
        for _ in range(50):  # the call's last flush follows the "ended" the page shows
            if await database.pool.fetchval("select status from user_sessions where id = $1", uuid.UUID(session_id)) == "ended":
                break
            await asyncio.sleep(0.1)

        await page.click("#tab-usage")
        await page.wait_for_function(
            "() => document.querySelectorAll('#usage-charts figure').length === 6", timeout=10_000
        )
        mic = await page.evaluate(
            """() => {
              const figure = document.querySelector('figure[data-usage-type="mic_audio_seconds"]');
              const bars = [...figure.querySelectorAll('rect.bar')];
              const today = figure.querySelector('rect.bar.today');
              const limit = figure.querySelector('line.limit');
              const box = (node) => node && node.getBoundingClientRect();
              return {
                bars: bars.length, todayDay: today?.dataset.day, todayAmount: Number(today?.dataset.amount),
                todayHeight: box(today)?.height, todayBottom: box(today)?.bottom, todayTop: box(today)?.top,
                limit: limit ? Number(limit.dataset.limit) : null, limitY: box(limit)?.top,
                line: Boolean(figure.querySelector('polyline.cumulative')),
                caption: figure.querySelector('figcaption').textContent,
                axis: figure.querySelector('text.axis-label').textContent,
              };
            }"""
        )
        report = await page.evaluate("() => fetch('/api/v1/usage/daily', {headers: {Authorization: 'Bearer ' + new URLSearchParams(location.search).get('access_token')}}).then(r => r.json())")
        today = report["days"][-1]
        # One bar, today's, as tall as the seconds the server metered; the limit line above it.
        assert mic["bars"] == 1 and mic["todayDay"] == today, mic
        served = report["usage"]["mic_audio_seconds"]["daily"][-1]
        assert 3.0 <= served <= 8.0, served
        assert mic["todayAmount"] == served
        assert mic["todayHeight"] > 20, mic
        assert mic["limit"] == 12 and mic["limitY"] < mic["todayTop"], mic
        assert mic["line"] and mic["axis"] == "seconds"
        assert "of 12 s" in mic["caption"], mic
        # An unlimited type says so instead of drawing a limit line.
        tokens_note = await page.evaluate(
            "() => document.querySelector('figure[data-usage-type=\"agent_tokens\"] text.limit-note')?.textContent"
        )
        assert tokens_note == "no monthly limit"
        await shoot(page, tmp_path, "usage")


async def test_preferences_are_saved_and_reloaded_from_the_server(
    voice_server: RunningServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # The voice server: its offline TTS has voices to choose from (the loopback server has none).
    server = voice_server
    user = f"page-prefs-{uuid.uuid4().hex[:8]}"
    voices = await get_json(http, server, user, "/api/v1/voices")
    avatars = await get_json(http, server, user, "/api/v1/avatars")
    voice = voices["voices"][-1]["voice_id"]
    avatar = avatars["avatars"][-1]["avatar_id"]
    async with page_for(server, user, tmp_path) as page:
        # The catalogues fill the selects (plus the "Default" choice).
        await page.wait_for_function(
            f"() => document.querySelector('#prefs-voice').options.length === {len(voices['voices']) + 1}"
            f" && document.querySelector('#prefs-avatar').options.length === {len(avatars['avatars']) + 1}",
            timeout=10_000,
        )
        await page.select_option("#prefs-voice", voice)
        await page.select_option("#prefs-avatar", avatar)
        await page.select_option("#prefs-quality", "high")
        await page.check("#prefs-enable-avatar")
        await page.click("#prefs-save")
        await page.wait_for_function("() => document.querySelector('#prefs-status').textContent === 'Saved'", timeout=10_000)
        stored = (await get_json(http, server, user, "/api/v1/users/me"))["preferences"]
        assert stored == {"avatar_id": avatar, "voice_id": voice, "quality": "high", "enable_avatar": True} | {
            k: v for k, v in stored.items() if k not in ("avatar_id", "voice_id", "quality", "enable_avatar")
        }

        # A reload shows what the server holds, not what the form last had.
        await page.reload()
        await page.wait_for_function(f"() => document.querySelector('#prefs-voice').value === {voice!r}", timeout=10_000)
        shown = await page.evaluate(
            """() => ({avatar: document.querySelector('#prefs-avatar').value, quality: document.querySelector('#prefs-quality').value,
                      enable: document.querySelector('#prefs-enable-avatar').checked})"""
        )
        assert shown == {"avatar": avatar, "quality": "high", "enable": True}
        await shoot(page, tmp_path, "preferences")

        # A value the server refuses: its message is shown and nothing changes on the server.
        await page.evaluate(
            """() => { const select = document.querySelector('#prefs-voice');
                       select.append(new Option('gone', 'no-such-voice')); select.value = 'no-such-voice';
                       select.dispatchEvent(new Event('input', {bubbles: true})); }"""
        )
        await page.click("#prefs-save")
        await page.wait_for_function("() => document.querySelector('#prefs-status').dataset.kind === 'error'", timeout=10_000)
        message = await page.text_content("#prefs-status")
        assert message.startswith("Not saved:") and len(message) > len("Not saved: "), message
        await shoot(page, tmp_path, "preferences-error")
    after = (await get_json(http, server, user, "/api/v1/users/me"))["preferences"]
    assert after["voice_id"] == voice


async def test_history_lists_sessions_newest_first_with_their_messages(
    voice_server: RunningServer, database: Database, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    from storage.messages import MessageRepository, NewMessage

    server = voice_server  # its demo agent answers typed messages (the loopback server has no agent)
    user = f"page-history-{uuid.uuid4().hex[:8]}"
    first = (await post_json(http, server, user, "/api/v1/sessions", {}, 201))["session_id"]
    question = "What can you tell me about the history view?"
    chat = await post_json(http, server, user, "/api/v1/chat/messages", {"content": question, "session_id": first})
    # A reply the person spoke over on a call: stored as what was spoken, marked interrupted.
    await MessageRepository(database.pool).write(NewMessage(
        uuid.uuid4(), uuid.UUID(first), "agent", "voice", "Well, let me think about", datetime.now(UTC),
        interrupted=True, spoken_characters=23, generated_characters=64,
    ))  # fmt: skip
    async with http.delete(f"{server.base_url}/api/v1/sessions/{first}", headers=server.auth(user)) as resp:
        assert resp.status == 200, await resp.text()
    # Ten newer sessions fill the first page (10 a page): the one with messages is behind "More".
    newer = [(await post_json(http, server, user, "/api/v1/sessions", {}, 201))["session_id"] for _ in range(10)]

    async with page_for(server, user, tmp_path) as page:
        await page.click("#tab-history")
        await page.wait_for_function("() => document.querySelectorAll('#history-list button.session').length === 10", timeout=10_000)
        shown = await page.eval_on_selector_all("#history-list button.session", "(buttons) => buttons.map((b) => b.dataset.sessionId)")
        assert shown == newer[::-1]  # newest first
        assert await page.is_visible("#history-more")
        await page.click("#history-more")
        await page.wait_for_function("() => document.querySelectorAll('#history-list button.session').length === 11", timeout=10_000)
        assert not await page.is_visible("#history-more")  # that was the last page
        oldest = page.locator(f'#history-list button.session[data-session-id="{first}"]')
        facts = await oldest.locator(".session-facts").text_content()
        assert "3 messages" in facts and "ended" in facts, facts
        await shoot(page, tmp_path, "history")

        await oldest.click()
        await page.wait_for_function("() => document.querySelectorAll('#history-messages li.message').length === 3", timeout=10_000)
        messages = await page.eval_on_selector_all(
            "#history-messages li.message",
            """(items) => items.map((li) => ({
                 role: li.classList.contains('user') ? 'user' : 'agent', interrupted: li.classList.contains('interrupted'),
                 meta: li.querySelector('.message-meta').textContent, text: li.querySelector('.message-text').textContent,
                 note: li.querySelector('.interrupted-note')?.textContent ?? null }))""",
        )
        # Who said what, in order; the typed question, the agent's reply, and the cut-off reply marked.
        assert [(m["role"], m["text"]) for m in messages] == [
            ("user", question), ("agent", chat["content"]), ("agent", "Well, let me think about"),
        ]
        assert messages[0]["meta"].startswith("You · typed") and messages[1]["meta"].startswith("Agent")
        assert [m["interrupted"] for m in messages] == [False, False, True]
        assert messages[2]["note"] == "Interrupted after 23 of 64 characters: the rest was never spoken"
        await shoot(page, tmp_path, "history-messages")

        # Back to the list, which is loaded afresh.
        await page.click("#history-back")
        await page.wait_for_function("() => document.querySelectorAll('#history-list button.session').length === 10", timeout=10_000)
