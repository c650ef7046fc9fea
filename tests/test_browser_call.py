"""The real page in headless Chromium: connect, audio flows both ways (getStats), hang up; and Chromium
encodes its microphone no wider than the voice pipeline hears (the answer's maxplaybackrate)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest

from media.aiortc_internals import tap_inbound_rtp
from signaling import keys
from tests.browser import chromium_args, require_chromium, write_wav
from tests.conftest import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Waits are written as functions: Playwright polls a bare expression with eval, which the page's CSP forbids.

STATS_JS = """
async () => {
  const stats = await window.voiceCall.pc.getStats();
  const out = {};
  stats.forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "audio") out.sent = s.packetsSent;
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      out.received = s.packetsReceived;
      out.energy = s.totalAudioEnergy;
    }
    if (s.type === "inbound-rtp" && s.kind === "video") out.videoFrames = s.framesDecoded;
  });
  return out;
}
"""


async def test_page_connects_and_audio_flows_both_ways(loopback_server: RunningServer, tmp_path: Path) -> None:
    executable = require_chromium()
    from playwright.async_api import async_playwright

    rate = 48_000
    t = np.arange(rate * 10) / rate
    tone = write_wav(tmp_path / "tone.wav", 9000 * np.sin(2 * np.pi * 440 * t), rate)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=chromium_args(tone))
        try:
            page = await browser.new_page()
            await page.goto(loopback_server.base_url + "/")
            await page.click("#connect")
            await page.wait_for_function("() => document.querySelector('#status').textContent === 'connected'", timeout=20_000)
            await asyncio.sleep(2.0)
            first = await page.evaluate(STATS_JS)
            await asyncio.sleep(1.0)
            second = await page.evaluate(STATS_JS)
            # Packets keep flowing out (the fake mic) and in (our echo of it), and what comes in is not silence.
            assert second["sent"] > first["sent"] > 0, (first, second)
            assert second["received"] > first["received"] > 0, (first, second)
            assert second["energy"] > first["energy"] > 0, (first, second)
            # The avatar's video plays too.
            assert second["videoFrames"] - first["videoFrames"] >= 10, (first, second)
            size = await page.evaluate("[document.querySelector('#avatar').videoWidth, document.querySelector('#avatar').videoHeight]")
            assert size == [320, 240]

            session_id = await page.evaluate("window.voiceCall.sessionId")
            call = loopback_server.app[keys.CALLS].get(uuid.UUID(session_id))
            assert call is not None and call.state == "connected"
            answer = await page.evaluate("window.voiceCall.pc.remoteDescription.sdp")
            assert "maxplaybackrate" not in answer  # the echo hears the full band

            await page.click("#hangup")
            await page.wait_for_function("() => document.querySelector('#status').textContent === 'ended'", timeout=10_000)
            # The page shows "ended" from the event; the final flush and the stored end follow.
            status = None
            for _ in range(50):
                status = await loopback_server.app[keys.DB].pool.fetchval(
                    "select status from user_sessions where id = $1", uuid.UUID(session_id)
                )
                if status == "ended":
                    break
                await asyncio.sleep(0.1)
            assert status == "ended"
            assert loopback_server.app[keys.CALLS].get(uuid.UUID(session_id)) is None
        finally:
            await browser.close()


async def test_page_shows_the_spoken_question_and_plays_the_answer(voice_server: RunningServer, tmp_path: Path) -> None:
    executable = require_chromium()
    from playwright.async_api import async_playwright

    from tests.speech import RATE, utterance, with_silence

    question = write_wav(tmp_path / "question.wav", with_silence(utterance("Hello, what time is it?"), 1.0, 4.0), RATE)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=chromium_args(question))
        try:
            page = await browser.new_page()
            await page.goto(voice_server.base_url + "/")
            await page.click("#connect")
            await page.wait_for_function("() => document.querySelector('#status').textContent === 'connected'", timeout=20_000)
            session_id = await page.evaluate("window.voiceCall.sessionId")
            call = voice_server.app[keys.CALLS].get(uuid.UUID(session_id))
            assert call is not None
            assert "maxplaybackrate=16000" in await page.evaluate("window.voiceCall.pc.remoteDescription.sdp")
            receiver = next(t.receiver for t in call._pc.getTransceivers() if t.kind == "audio")
            configs: list[int] = []
            tap_inbound_rtp(receiver, lambda packet: configs.append(packet.payload[0] >> 3) if packet.payload else None)
            # The user's words appear on the page, then the agent's answer.
            await page.wait_for_function(
                "() => [...document.querySelectorAll('#transcript li.user')].some(li => /time/i.test(li.textContent))",
                timeout=30_000,
            )
            await page.wait_for_function(
                "() => [...document.querySelectorAll('#transcript li.agent')].some(li => /\\d:\\d\\d/.test(li.textContent))",
                timeout=30_000,
            )
            before = await page.evaluate(STATS_JS)
            await page.wait_for_function(
                "() => window.voiceCall.events.some(e => e.type === 'bot_speaking' && e.speaking === false)", timeout=30_000
            )
            after = await page.evaluate(STATS_JS)
            # The reply arrived as sound, not silence: audio energy grew while the bot spoke.
            assert after["energy"] - before["energy"] > 0.01, (before, after)
            # Chromium's encoder kept to wideband, as the answer asked: SILK up to 16 kHz (TOC configs 0-11) or
            # CELT narrow/wideband (16-23); never hybrid or CELT above 8 kHz of audio, which this pipeline drops.
            assert len(configs) > 100 and any(config <= 11 for config in configs), sorted(set(configs))
            assert all(config <= 11 or 16 <= config <= 23 for config in configs), sorted(set(configs))
            await page.click("#hangup")
        finally:
            await browser.close()
