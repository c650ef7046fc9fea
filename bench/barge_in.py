"""Barge-in at the client: how long the bot keeps talking once the user speaks over it, and what must not stop it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import numpy as np

from bench.client_timing import RATE
from bench.speech_sets import Question
from bench.voice_call import BenchCall

# The offline agent says back whatever follows "repeat after me": one long sentence, about 12 s of Piper,
# with no sentence gaps a stop could hide in. The cloud fakes echo it as 10 ms of tone per character.
_COUNT = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty twenty one twenty two twenty three twenty four twenty five"
)
LONG_MESSAGE = {"offline": f"Repeat after me: {_COUNT}", "cloud-fakes": " ".join([_COUNT] * 5)}
# The bot has stopped once this long passes with no reply speech: longer than any gap between its words,
# shorter than the end of the user's turn plus STT before the bot answers the interruption.
STOPPED_GAP_S = 0.5
CHECK_WINDOW_S = 2.0  # how long a false barge-in check watches for an interruption
SPEAK_FIRST_S = 0.8  # the bot speaks this long before the user (or the noise) comes in


@dataclass
class BargeResult:
    stop_ms: float | None  # first voiced sample of the user sent -> last bot frame with speech received
    wire_stop_ms: float | None  # the same, to that frame's packet reaching the client (before its jitter buffer)
    interrupted: bool  # the server published `interrupted` (barge_in) during the trial


@dataclass
class FalseCheck:
    name: str
    interrupted: int  # `interrupted` (barge_in) events while it played: should be 0
    bot_went_on: bool  # bot speech still arrived after it


def barge_ins(call: BenchCall, since: float) -> int:
    return sum(1 for e in call.events_of("interrupted", since) if e.get("reason") == "barge_in")


async def _long_reply(call: BenchCall, http: aiohttp.ClientSession, engines: str) -> tuple[asyncio.Task[str], float]:
    """Start the long reply; returns its message task and when its speech reached the client."""
    loop = asyncio.get_running_loop()
    asked = loop.time()
    task = call.say(http, LONG_MESSAGE[engines])
    start = await call.wait_reply(asked)
    if start is None:
        raise RuntimeError("the long reply never played")
    return task, start


async def _finish(call: BenchCall, task: asyncio.Task[str]) -> None:
    await asyncio.gather(task, return_exceptions=True)
    await call.settle()


async def barge_in_trial(
    call: BenchCall, http: aiohttp.ClientSession, engines: str, user: Question, index: int
) -> BargeResult:
    """The user speaks over a long reply; time from their first voiced sample sent to the bot's last speech heard."""
    loop = asyncio.get_running_loop()
    task, start = await _long_reply(call, http, engines)
    # Come in at a different point of a word each time.
    await asyncio.sleep(max(0.0, start + SPEAK_FIRST_S + 0.13 * (index % 5) - loop.time()))
    playback = call.play(user)
    while playback.first_voiced_sent is None:
        await asyncio.sleep(0.005)
    spoke = playback.first_voiced_sent
    deadline = loop.time() + 20
    while (stopped := call.recorder.last_before_gap(spoke, STOPPED_GAP_S, include_before=True)) is None:
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.02)
    await playback.ended.wait()
    await asyncio.gather(task, return_exceptions=True)
    # The bot answers the interruption itself once the user's turn ends: let that answer play out too.
    if playback.last_voiced_sent is not None and await call.wait_reply(playback.last_voiced_sent) is not None:
        await call.settle()
    stop_ms = None if stopped is None else max(0.0, stopped - spoke) * 1000
    wire = call.recorder.last_before_gap(spoke, STOPPED_GAP_S, include_before=True, wire=True)
    wire_stop_ms = None if stopped is None or wire is None else max(0.0, wire - spoke) * 1000
    return BargeResult(stop_ms=stop_ms, wire_stop_ms=wire_stop_ms, interrupted=barge_ins(call, spoke) > 0)


def noise_burst() -> np.ndarray:
    """120 ms of white noise at about -20 dBFS: a bump or a cough, not speech."""
    return (np.random.default_rng(7).normal(0, 3300, RATE * 120 // 1000)).clip(-32767, 32767).astype(np.int16)


def click() -> np.ndarray:
    """A sharp click: a full-scale step that rings down within 10 ms."""
    t = np.arange(RATE // 100)
    return (30000 * np.exp(-t / 40) * np.cos(2 * np.pi * 2000 * t / RATE)).astype(np.int16)


def echo(call: BenchCall, start: float, db: float) -> np.ndarray:
    """What the client has received of the current reply so far, attenuated by `db`."""
    received = call.recorder.audio_between(start - 0.1, start + CHECK_WINDOW_S).astype(np.float64)
    return (received * 10 ** (db / 20)).astype(np.int16)


async def false_barge_in_check(
    call: BenchCall, http: aiohttp.ClientSession, engines: str, name: str, make: Callable[[BenchCall, float], np.ndarray]
) -> FalseCheck:
    """Play `make`'s audio (nothing at all for the bot alone) over the long reply; count interruptions."""
    loop = asyncio.get_running_loop()
    task, start = await _long_reply(call, http, engines)
    await asyncio.sleep(max(0.0, start + SPEAK_FIRST_S * 2 - loop.time()))
    began = loop.time()
    stimulus = make(call, start)
    if stimulus.size:
        call.source.play(stimulus)
    await asyncio.sleep(CHECK_WINDOW_S)
    interrupted = barge_ins(call, began)
    went_on = call.recorder.voiced_between(began + STOPPED_GAP_S * 2, loop.time()) > 0
    thanks = call.say(http, "Thank you.")  # cuts the long reply short (a new turn, not a barge-in)
    await _finish(call, task)
    await _finish(call, thanks)
    return FalseCheck(name, interrupted, went_on)


FALSE_CHECKS: dict[str, Callable[[BenchCall, float], np.ndarray]] = {
    "noise burst 120 ms": lambda call, start: noise_burst(),
    "click": lambda call, start: click(),
    "bot alone, mic silent": lambda call, start: np.zeros(0, np.int16),
    # The bot's own speech as the client received it, fed back into the microphone at the level an echo
    # canceller typically leaves (the server itself cancels no echo).
    "own voice echoed at -30 dB": lambda call, start: echo(call, start, -30),
    "own voice echoed at -40 dB": lambda call, start: echo(call, start, -40),
}
