"""The bot's own voice coming back through the microphone never interrupts it; the user talking over it does.

The pipeline runs with the loudness VAD of tests/test_voice_pipeline_units.py (which, like Silero, calls
an echo speech) and the bot's speech really leaves through the call's paced track, whose sent frames
tell the echo gate what the bot said.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from media.echo_gate import EchoGate
from tests.test_reply_ahead import Rig, silence
from tests.test_voice_pipeline_units import FRAME, RATE, frames_of

pytestmark = pytest.mark.asyncio

BOT_LEVEL = 20_000


def voice(level: int, seconds: float) -> np.ndarray:
    """A 200 Hz tone standing in for speech at `level` peak."""
    t = np.arange(int(RATE * seconds)) / RATE
    return (level * np.sin(2 * np.pi * 200 * t)).astype(np.int16)


async def bot_speaks_while(rig: Rig, inbound: np.ndarray) -> None:
    """The bot's speech goes out frame by frame while `inbound` comes in, as on a real call."""
    rig.pipeline._replies.set_speaking(True)
    rig.track.push(voice(BOT_LEVEL, inbound.size / RATE + 1.0))
    for frame in frames_of(inbound):
        await rig.track.recv()  # one bot frame sent...
        rig.pipeline.on_audio_frame(frame)  # ...one user frame heard
        await asyncio.sleep(0)


async def test_the_bots_echo_does_not_interrupt_it() -> None:
    rig = Rig(["x"], ["x"])
    await bot_speaks_while(rig, voice(BOT_LEVEL // 18, 1.5))  # -25 dB: speech to the VAD, echo to the gate
    assert not rig.of_type("interrupted")
    assert rig.track.queued_samples > 0  # still speaking
    assert rig.pipeline._echo.frames_held_back > 0
    await rig.pipeline.stop()


async def test_the_user_talking_over_the_bot_interrupts_it() -> None:
    rig = Rig(["x"], ["x"])
    await bot_speaks_while(rig, voice(BOT_LEVEL // 2, 0.5))  # -6 dB: a person, not an echo
    interrupted = rig.of_type("interrupted")
    assert interrupted and interrupted[0]["reason"] == "barge_in"
    await rig.pipeline.stop()


async def test_an_echo_is_a_turn_once_the_bot_has_been_quiet_a_while() -> None:
    rig = Rig(["Hello there."], ["Hello there."])
    await bot_speaks_while(rig, silence(200))
    rig.track.flush()
    for _ in range(40):  # 800 ms of silence sent: the gate opens again
        await rig.track.recv()
    await rig.feed(voice(BOT_LEVEL // 18, 0.5))
    assert rig.of_type("user_speaking"), "quiet speech with no bot voice around is the user's"
    await rig.pipeline.stop()


async def test_the_gate_follows_the_loudest_recent_frame() -> None:
    gate = EchoGate()
    assert gate.threshold() == 0.0 and not gate.is_echo(np.full(FRAME, 5, np.int16))
    loud = np.full(FRAME, -32768, np.int16)  # the most negative sample is the loudest there is
    gate.on_sent(loud)
    assert gate.threshold() == pytest.approx(32768 * 0.1, rel=1e-3)
    assert gate.is_echo(np.full(320, 3000, np.int16))
    assert not gate.is_echo(np.full(320, 4000, np.int16))
    for _ in range(30):  # 600 ms of silence sent
        gate.on_sent(np.zeros(FRAME, np.int16))
    assert gate.threshold() == 0.0


def test_the_kept_loudest_is_the_loudest_of_the_span() -> None:
    """The gate keeps its loudest peak as frames come and go; it must always equal a fresh search of
    the span, whatever the order of loud, quiet, repeated and shared-silence frames."""
    from media.echo_gate import ECHO_SPAN_MS, FRAME_MS
    from media.opus_encoder import SILENT_FRAME

    rng = np.random.default_rng(7)
    gate = EchoGate()
    span = ECHO_SPAN_MS // FRAME_MS
    sent: list[int] = []
    for step in range(3000):
        kind = rng.integers(0, 4)
        if kind == 0:
            frame = SILENT_FRAME
        elif kind == 1:
            frame = np.zeros(960, np.int16)  # silence that is not the shared frame
        else:
            level = int(rng.choice([1, 100, 5000, 20000, 32767]))
            frame = rng.integers(-level, level + 1, 960).astype(np.int16)
            if kind == 3 and sent:  # the very peak leaving the span again
                frame = np.full(960, sent[-1], np.int16)
        gate.on_sent(frame)
        sent.append(max(int(frame.max()), -int(frame.min())))
        expected = max(sent[-span:]) * 10 ** (-20 / 20)
        assert gate.threshold() == pytest.approx(expected), step
        probe = np.full(320, int(expected * 0.9) if expected else 1, np.int16)
        assert gate.is_echo(probe) == (expected > 0 and int(probe[0]) < expected), step
