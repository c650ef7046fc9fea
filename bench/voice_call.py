"""One benchmark call: a WebRTC client with timed audio both ways, plus the call's events WebSocket."""

from __future__ import annotations

import asyncio
import os
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from bench.client_timing import RATE, Playback, TimedRecorder, TimedSource
from media.aiortc_internals import tap_inbound_rtp
from bench.speech_sets import Question
from tests.rtc_client import RtcClient

REPLY_TIMEOUT_S = 15.0  # from the end of a question to the start of its reply
SETTLED_QUIET_S = 1.0  # a turn is over once the bot has been quiet this long and says it is not speaking


@dataclass
class TurnResult:
    question: Question
    client_ms: float | None  # end of the question's last voiced sample sent -> first reply frame received
    wire_ms: float | None  # the same, to the arrival of that frame's packet (before the client's jitter buffer)
    server_ms: int | None  # the answering reply's turn_metrics voice_to_voice_ms
    replies: int  # replies that began to play (turn_metrics events) during the turn
    early: bool  # reply speech arrived before the question's last voiced sample was sent
    heard: str  # the final transcripts, as the server heard the question

    @property
    def fragment(self) -> bool:
        return self.replies > 1 or self.early


@dataclass
class BenchCall:
    base_url: str
    token: str
    keep_audio: bool = False
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (arrival, event)
    source: TimedSource = field(init=False)
    recorder: TimedRecorder = field(init=False)
    client: RtcClient = field(init=False)
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _reader: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.source = TimedSource()
        self.recorder = TimedRecorder(keep_audio=self.keep_audio)
        self.client = RtcClient(self.base_url, self.token, source=self.source, recorder=self.recorder)

    async def open(self, http: aiohttp.ClientSession) -> None:
        await self.client.create_session(http)
        url = f"{self.base_url}/api/v1/sessions/{self.client.session_id}/events?access_token={self.token}"
        self._ws = await http.ws_connect(url)
        self._reader = asyncio.ensure_future(self._read_events(self._ws))
        await self.client.connect(http)
        assert self.client.pc is not None
        for receiver in self.client.pc.getReceivers():
            if receiver.track is not None and receiver.track.kind == "audio":
                tap_inbound_rtp(receiver, self.recorder.on_packet)
        await self.client.wait_connected()
        await asyncio.sleep(0.5)  # let both directions' first packets settle the jitter buffers

    async def _read_events(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        loop = asyncio.get_running_loop()
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                self.events.append((loop.time(), json.loads(message.data)))

    def events_of(self, kind: str, start: float, end: float = float("inf")) -> list[dict[str, Any]]:
        return [e for t, e in self.events if e.get("type") == kind and start < t <= end]

    @property
    def bot_speaking(self) -> bool:
        said = [e["speaking"] for _, e in self.events if e.get("type") == "bot_speaking"]
        return bool(said and said[-1])

    def play(self, question: Question, lead_samples: int = 0) -> Playback:
        """Start the question (after `lead_samples` of silence) on the next outgoing frame."""
        samples = np.concatenate([np.zeros(lead_samples, np.int16), question.samples])
        return self.source.play_timed(samples, lead_samples + question.voiced_start, lead_samples + question.voiced_end)

    async def wait_reply(self, after: float, timeout: float = REPLY_TIMEOUT_S) -> float | None:
        """Arrival of the first reply frame after `after`, or None if none came in time."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (start := self.recorder.reply_start(after)) is None:
            if asyncio.get_running_loop().time() > deadline:
                return None
            await asyncio.sleep(0.02)
        return start

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until the bot has finished speaking (and been quiet a while)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.recorder.quiet_for() < SETTLED_QUIET_S or self.bot_speaking:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the bot did not stop speaking")
            await asyncio.sleep(0.05)

    async def ask(self, question: Question, lead_samples: int = 0) -> TurnResult:
        """Speak a question, wait for the reply and for the bot to finish, and time it all at the client."""
        playback = self.play(question, lead_samples)
        await asyncio.wait_for(playback.ended.wait(), timeout=(len(playback.samples) / RATE) + 5)
        started, ended = playback.first_voiced_sent, playback.last_voiced_sent
        assert started is not None and ended is not None
        reply = await self.wait_reply(ended)
        if reply is not None:
            await self.settle()
        else:
            await asyncio.sleep(SETTLED_QUIET_S)
        done = asyncio.get_running_loop().time()
        metrics = self.events_of("turn_metrics", started, done)
        if metrics and os.environ.get("VOICE_LATENCY_STAGES"):
            print("    stages:", {k: v for k, v in metrics[-1].items() if k.endswith("_ms")}, flush=True)
        heard = [e["text"] for e in self.events_of("transcript", started, done) if e.get("final")]
        return TurnResult(
            question=question,
            client_ms=None if reply is None else (reply - ended) * 1000,
            wire_ms=None if reply is None else (self.recorder.reply_start(ended, wire=True) - ended) * 1000,  # type: ignore[operator]
            server_ms=metrics[-1].get("voice_to_voice_ms") if metrics else None,
            replies=len(metrics),
            early=self.recorder.voiced_between(started, ended) > 0,
            heard=" | ".join(heard),
        )

    def say(self, http: aiohttp.ClientSession, text: str) -> asyncio.Task[str]:
        """Post a typed message (its reply is spoken on the call); the task ends when the server answers."""

        async def post() -> str:
            url = f"{self.base_url}/api/v1/sessions/{self.client.session_id}/messages"
            async with http.post(url, json={"text": text}, headers=self.client.headers) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"message failed: {resp.status} {body}")
                return str(body)

        return asyncio.ensure_future(post())

    async def close(self, http: aiohttp.ClientSession) -> None:
        await self.client.hangup(http)
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
