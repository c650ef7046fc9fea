"""The real page in headless Chromium shows the LiveAvatar, relayed through our server, pixel for pixel."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest

from signaling import keys
from storage.database import Database
from tests.browser import chromium_args, require_chromium, write_wav
from tests.conftest import start_server
from tests.fakes.liveavatar_fake import FakeLiveAvatar
from tests.fakes.livekit_fake import FakeLiveKitServer, read_pattern
from tests.netns.avatar_setup import avatar_settings, stops_of, until

pytestmark = pytest.mark.asyncio(loop_scope="session")

# The frame on screen, back to limited-range luma (what the avatar published) through a canvas.
LUMA_JS = """
() => {
  const video = document.querySelector('#avatar');
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const context = canvas.getContext('2d');
  context.drawImage(video, 0, 0);
  const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const luma = new Array(canvas.width * canvas.height);
  for (let i = 0; i < luma.length; i++) {
    luma[i] = Math.round(16 + (0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2]) * 219 / 255);
  }
  return { width: canvas.width, height: canvas.height, luma };
}
"""


async def test_the_page_shows_the_relayed_avatar(
    database: Database, tmp_path: Path, fakes: tuple[FakeLiveKitServer, FakeLiveAvatar]
) -> None:
    executable = require_chromium()
    from playwright.async_api import async_playwright

    _, liveavatar = fakes
    runner, server = await start_server(avatar_settings(database, tmp_path, liveavatar, pipeline="loopback"))
    rate = 48_000
    t = np.arange(rate * 10) / rate
    tone = write_wav(tmp_path / "tone.wav", 9000 * np.sin(2 * np.pi * 440 * t), rate)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=executable, args=chromium_args(tone))
            try:
                page = await browser.new_page()
                await page.goto(server.base_url + "/")
                await page.click("#connect")
                await page.wait_for_function("() => document.querySelector('#status').textContent === 'connected'", timeout=20_000)
                await page.wait_for_function("() => document.querySelector('#avatar').videoWidth === 512", timeout=20_000)
                session_id = await page.evaluate("window.voiceCall.sessionId")
                call = server.app[keys.CALLS].get(uuid.UUID(session_id))
                assert call is not None and call.avatar_relay is not None
                sid = call.avatar_relay.session.session_id
                indices = []
                for _ in range(4):
                    await asyncio.sleep(0.3)
                    shown = await page.evaluate(LUMA_JS)
                    luma = np.array(shown["luma"], dtype=np.uint8).reshape(shown["height"], shown["width"])
                    index, error = read_pattern(luma)
                    assert index is not None, error
                    assert error < 16, error  # VP8 twice, then the browser's YUV -> RGB and our way back
                    indices.append(index)
                assert indices == sorted(indices) and len(set(indices)) == len(indices), indices
                await page.click("#hangup")
                await page.wait_for_function("() => document.querySelector('#status').textContent === 'ended'", timeout=10_000)
                await until(lambda: bool(stops_of(liveavatar, sid)), 10, "the stop")
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
