"""A local stand-in for Google Text-to-Speech: a real grpc.aio server on a free localhost port.

It serves google.cloud.texttospeech.v1.TextToSpeech/StreamingSynthesize and /SynthesizeSpeech with
the client package's own message classes, checks what the real service checks (config first, then
text only; at most 5,000 bytes of text per request; PCM or LINEAR16 at 24 kHz) and answers each
text with a known tone: a sine at `tone_hz` starting at phase 0, `seconds_per_char` long per
character, in `chunk_ms` chunks `chunk_delay_s` apart. SynthesizeSpeech returns the same tone as a
WAV whose header is not 44 bytes (a padded LIST chunk precedes the data). Faults are queued with
`inject`; every call is recorded in `calls`.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import grpc.aio
import numpy as np
from google.cloud.texttospeech_v1 import types as tts

from tests.fakes.grpc_fake import GrpcFake

SERVICE = "google.cloud.texttospeech.v1.TextToSpeech"
RATE = 24_000
MAX_INPUT_BYTES = 5_000


@dataclass
class Fault:
    """What goes wrong with one call.

    abort: the call fails with `code` before any audio (UNAVAILABLE by default).
    drop: the stream breaks with `code` after `after_chunks` chunks of audio.
    stall: nothing is sent for `stall_s`, then the call goes on normally.
    """

    kind: str
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    after_chunks: int = 1
    stall_s: float = 1.0


@dataclass
class RecordedCall:
    method: str  # "StreamingSynthesize" or "SynthesizeSpeech"
    requests: list[object] = field(default_factory=list)  # proto-plus messages, as received
    fault: Fault | None = None
    chunks_sent: int = 0
    first_chunk_at: float | None = None  # loop time
    finished_at: float | None = None  # loop time the last audio was handed to gRPC
    status: str = "OK"


class FakeTextToSpeech(GrpcFake[Fault]):
    service = SERVICE

    def __init__(
        self,
        tone_hz: float = 440.0,
        seconds_per_char: float = 0.01,
        chunk_ms: int = 100,
        chunk_delay_s: float = 0.0,
        amplitude: int = 8000,
    ) -> None:
        self.tone_hz = tone_hz
        self.seconds_per_char = seconds_per_char
        self.chunk_ms = chunk_ms
        self.chunk_delay_s = chunk_delay_s
        self.amplitude = amplitude
        self.calls: list[RecordedCall] = []
        super().__init__()

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        return {
            "StreamingSynthesize": grpc.stream_stream_rpc_method_handler(
                self._streaming_synthesize,
                request_deserializer=tts.StreamingSynthesizeRequest.deserialize,
                response_serializer=tts.StreamingSynthesizeResponse.serialize,
            ),
            "SynthesizeSpeech": grpc.unary_unary_rpc_method_handler(
                self._synthesize_speech,
                request_deserializer=tts.SynthesizeSpeechRequest.deserialize,
                response_serializer=tts.SynthesizeSpeechResponse.serialize,
            ),
        }

    def tone(self, text: str) -> np.ndarray:
        """The int16 samples the fake answers `text` with."""
        count = round(len(text) * self.seconds_per_char * RATE)
        t = np.arange(count) / RATE
        return np.round(self.amplitude * np.sin(2 * math.pi * self.tone_hz * t)).astype("<i2")

    # -- handlers --------------------------------------------------------------------------------

    async def _streaming_synthesize(
        self, requests: AsyncIterator[tts.StreamingSynthesizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tts.StreamingSynthesizeResponse]:
        call = self._record("StreamingSynthesize")
        # An injected failure comes once the client has sent everything: ended while the client still
        # writes, a bidi call may reach grpc.aio's client as INTERNAL instead of the status sent.
        failing = call.fault is not None and call.fault.kind == "abort"
        finished = False
        try:
            async for response in self._answer_stream(call, context, requests, failing):
                yield response
            finished = True
        finally:
            if not finished and call.status == "OK":
                call.status = "CANCELLED"  # the client went away before the answer ended

    async def _answer_stream(
        self,
        call: RecordedCall,
        context: grpc.aio.ServicerContext,
        requests: AsyncIterator[tts.StreamingSynthesizeRequest],
        failing: bool,
    ) -> AsyncIterator[tts.StreamingSynthesizeResponse]:
        index = 0
        async for request in requests:
            call.requests.append(request)
            kind = tts.StreamingSynthesizeRequest.pb(request).WhichOneof("streaming_request")
            if index == 0:
                if kind != "streaming_config":
                    await self._abort(call, context, grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry streaming_config only")
                await self._check_streaming_config(call, context, request.streaming_config)
            elif kind != "input":
                await self._abort(call, context, grpc.StatusCode.INVALID_ARGUMENT, "requests after the first must carry input only")
            else:
                await self._check_text(call, context, request.input.text)
                if failing:
                    continue
                async for pcm in self._audio(call, context, request.input.text):
                    yield tts.StreamingSynthesizeResponse(audio_content=pcm)
            index += 1
        if call.fault is not None and failing:
            await self._abort(call, context, call.fault.code, "the fake was told to fail this call")
        call.finished_at = asyncio.get_running_loop().time()

    async def _synthesize_speech(
        self, request: tts.SynthesizeSpeechRequest, context: grpc.aio.ServicerContext
    ) -> tts.SynthesizeSpeechResponse:
        call = self._record("SynthesizeSpeech")
        call.requests.append(request)
        if call.fault is not None and call.fault.kind in ("abort", "drop"):
            await self._abort(call, context, call.fault.code, "the fake was told to fail this call")
        if not request.voice.name or not request.voice.language_code:
            await self._abort(call, context, grpc.StatusCode.INVALID_ARGUMENT, "voice name and language are required")
        config = request.audio_config
        if config.audio_encoding != tts.AudioEncoding.LINEAR16 or config.sample_rate_hertz not in (0, RATE):
            await self._abort(call, context, grpc.StatusCode.INVALID_ARGUMENT, "the fake speaks LINEAR16 at 24 kHz only")
        await self._check_text(call, context, request.input.text)
        pcm = b"".join([chunk async for chunk in self._audio(call, context, request.input.text)])
        call.finished_at = asyncio.get_running_loop().time()
        return tts.SynthesizeSpeechResponse(audio_content=wav_with_extra_chunk(pcm))

    # -- helpers ---------------------------------------------------------------------------------

    def _record(self, method: str) -> RecordedCall:
        call = RecordedCall(method, fault=self._take_fault())
        self.calls.append(call)
        return call

    async def _audio(self, call: RecordedCall, context: grpc.aio.ServicerContext, text: str) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        fault = call.fault
        if fault is not None and fault.kind == "stall":
            await asyncio.sleep(fault.stall_s)
        pcm = self.tone(text).tobytes()
        step = RATE * self.chunk_ms // 1000 * 2
        for offset in range(0, len(pcm), step):
            if fault is not None and fault.kind == "drop" and call.chunks_sent >= fault.after_chunks:
                await self._abort(call, context, fault.code, "the stream was dropped")
            if call.chunks_sent and self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            call.chunks_sent += 1
            if call.first_chunk_at is None:
                call.first_chunk_at = loop.time()
            yield pcm[offset : offset + step]

    async def _check_streaming_config(
        self, call: RecordedCall, context: grpc.aio.ServicerContext, config: tts.StreamingSynthesizeConfig
    ) -> None:
        if "Chirp3-HD" not in config.voice.name or not config.voice.language_code:
            await self._abort(call, context, grpc.StatusCode.INVALID_ARGUMENT, "streaming needs a Chirp 3 HD voice and a language")
        audio = config.streaming_audio_config
        if audio.audio_encoding != tts.AudioEncoding.PCM or audio.sample_rate_hertz not in (0, RATE):
            await self._abort(call, context, grpc.StatusCode.INVALID_ARGUMENT, "the fake streams PCM at 24 kHz only")

    async def _check_text(self, call: RecordedCall, context: grpc.aio.ServicerContext, text: str) -> None:
        if not text.strip():
            await self._abort(call, context, grpc.StatusCode.INVALID_ARGUMENT, "input text is empty")
        if len(text.encode("utf-8")) > MAX_INPUT_BYTES:
            await self._abort(call, context, grpc.StatusCode.INVALID_ARGUMENT, "input text is longer than 5000 bytes")

    async def _abort(self, call: RecordedCall, context: grpc.aio.ServicerContext, code: grpc.StatusCode, why: str) -> None:
        call.status = code.name
        await context.abort(code, why)


def wav_with_extra_chunk(pcm: bytes) -> bytes:
    """A mono 16-bit 24 kHz WAV with an odd-sized LIST chunk (and its pad byte) before `data`."""
    fmt = struct.pack("<HHIIHH", 1, 1, RATE, RATE * 2, 2, 16)
    info = b"INFOISFT" + struct.pack("<I", 5) + b"fake\x00"  # 17 bytes: odd, so a pad byte follows
    chunks = (
        b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"LIST" + struct.pack("<I", len(info)) + info + b"\x00"
        + b"data" + struct.pack("<I", len(pcm)) + pcm
    )
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks
