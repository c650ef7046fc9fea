"""A local stand-in for Google Speech-to-Text v2: a real grpc.aio server on a free localhost port.

It serves google.cloud.speech.v2.Speech/StreamingRecognize with the client package's own message
classes and checks what the service checks: the first message carries the recognizer and the
streaming config (explicit LINEAR16 decoding) and no audio, the others audio only, at most 25,600
bytes each (INVALID_ARGUMENT otherwise). It "recognises" the audio itself: test speech is made of
tone bursts (`speech_pcm()`), each word its own frequency; a burst of three 20 ms frames or more is that
word. Interim results come as words are heard, a final result after `final_silence_ms` of silence,
each with `result_end_offset` and `metadata.total_billed_duration` (the stream's audio so far).

Faults: a maximum stream duration (ABORTED "Max duration of 5 minutes reached for stream." after
`max_stream_ms` of audio), queued per-stream faults (`inject`: UNAVAILABLE, INTERNAL, a dropped
stream, a refused one), and slowness (`final_delay_s`). Every stream is recorded in `streams`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
import grpc.aio
import numpy as np
from google.cloud.speech_v2.types import cloud_speech as speech

from tests.fakes.grpc_fake import GrpcFake

SERVICE = "google.cloud.speech.v2.Speech"
RATE = 16_000
BYTES_PER_MS = RATE * 2 // 1000
FRAME_SAMPLES = RATE // 50  # 20 ms
FRAME_BYTES = FRAME_SAMPLES * 2
MAX_AUDIO_BYTES = 25_600
MIN_WORD_FRAMES = 3
SILENCE_RMS = 200.0  # int16 RMS under which a frame is silence
WORDS = {
    "alpha": 400, "bravo": 600, "charlie": 800, "delta": 1000, "echo": 1200, "foxtrot": 1400,
    "golf": 1600, "hotel": 1800, "india": 2000, "juliett": 2200, "kilo": 2400, "lima": 2600,
}  # fmt: skip
_RECOGNIZER = re.compile(r"projects/[^/]+/locations/[^/]+/recognizers/[^/]+")


def speech_pcm(*phrases: str, word_ms: int = 160, gap_ms: int = 60, pause_ms: int = 400, lead_ms: int = 40) -> bytes:
    """16 kHz int16 audio of `phrases` (words from WORDS): words `gap_ms` apart, phrases `pause_ms` apart."""
    parts = [np.zeros(RATE * lead_ms // 1000)]
    for p, phrase in enumerate(phrases):
        if p:
            parts.append(np.zeros(RATE * pause_ms // 1000))
        for w, word in enumerate(phrase.split()):
            if w:
                parts.append(np.zeros(RATE * gap_ms // 1000))
            t = np.arange(RATE * word_ms // 1000) / RATE
            parts.append(8000 * np.sin(2 * np.pi * WORDS[word] * t))
    return np.concatenate(parts).round().astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return bytes(ms * BYTES_PER_MS)


@dataclass
class Fault:
    """What goes wrong with one stream: "unavailable", "internal" or "drop" (the stream ends with OK,
    unannounced) once `after_ms` of its audio has been recognised; "refuse": `code` before any audio."""

    kind: str
    after_ms: int = 0
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE


@dataclass
class RecordedStream:
    config: speech.StreamingRecognizeRequest | None = None
    kinds: list[str] = field(default_factory=list)  # each request's oneof: "streaming_config" or "audio"
    sizes: list[int] = field(default_factory=list)  # each audio message's bytes
    audio: bytearray = field(default_factory=bytearray)  # every audio byte received
    recognised: int = 0  # bytes of `audio` recognised before the stream ended
    finals: list[tuple[str, int]] = field(default_factory=list)  # text and end offset (bytes) of each final
    interims: list[str] = field(default_factory=list)
    billed_ms: int = 0  # the last total_billed_duration sent
    fault: Fault | None = None
    status: str = "OK"


class _Recogniser:
    """Tone bursts to words, frame by frame; positions are bytes from the start of the stream."""

    def __init__(self, final_silence_ms: int) -> None:
        self._final_frames = max(final_silence_ms // 20, 1)
        self._tail = b""
        self.frames = 0
        self._run_word: str | None = None
        self._run = 0
        self._silent = 0
        self._phrase: list[str] = []

    def feed(self, pcm: bytes) -> list[tuple[bool, str, int]]:
        """(is_final, text, end offset) of every result the new audio gives."""
        data = self._tail + pcm
        whole = len(data) // FRAME_BYTES * FRAME_BYTES
        self._tail = data[whole:]
        results: list[tuple[bool, str, int]] = []
        for offset in range(0, whole, FRAME_BYTES):
            frame = np.frombuffer(data[offset : offset + FRAME_BYTES], dtype="<i2").astype(np.float64)
            self.frames += 1
            word = self._word(frame)
            if word is None:
                self._run_word, self._run = None, 0
                self._silent += 1
                if self._phrase and self._silent >= self._final_frames:
                    results.append((True, " ".join(self._phrase), self.frames * FRAME_BYTES))
                    self._phrase = []
                continue
            self._silent = 0
            self._run = self._run + 1 if word == self._run_word else 1
            self._run_word = word
            if self._run == MIN_WORD_FRAMES:
                self._phrase.append(word)
                results.append((False, " ".join(self._phrase), self.frames * FRAME_BYTES))
        return results

    @staticmethod
    def _word(frame: np.ndarray) -> str | None:
        if float(np.sqrt(np.mean(frame**2))) < SILENCE_RMS:
            return None
        spectrum = np.abs(np.fft.rfft(frame * np.hanning(len(frame))))
        hz = float(np.argmax(spectrum[1:]) + 1) * RATE / len(frame)
        name, tone = min(WORDS.items(), key=lambda item: abs(item[1] - hz))
        return name if abs(tone - hz) <= 100 else None


class FakeSpeech(GrpcFake[Fault]):
    service = SERVICE

    def __init__(
        self,
        *,
        max_stream_ms: int | None = None,
        final_silence_ms: int = 300,
        final_delay_s: float = 0.0,
        model: str = "long",
        language: str = "en-US",
    ) -> None:
        self.max_stream_ms = max_stream_ms
        self.final_silence_ms = final_silence_ms
        self.final_delay_s = final_delay_s
        self.model = model
        self.language = language
        self.streams: list[RecordedStream] = []
        super().__init__()

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        return {
            "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
                self._streaming_recognize,
                request_deserializer=speech.StreamingRecognizeRequest.deserialize,
                response_serializer=speech.StreamingRecognizeResponse.serialize,
            )
        }

    def finals(self) -> list[str]:
        return [text for stream in self.streams for text, _ in stream.finals]

    # -- the service -----------------------------------------------------------------------------

    async def _streaming_recognize(
        self, requests: AsyncIterator[speech.StreamingRecognizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[speech.StreamingRecognizeResponse]:
        stream = RecordedStream(fault=self._take_fault())
        self.streams.append(stream)
        fault = stream.fault
        recogniser = _Recogniser(self.final_silence_ms)
        limit = self.max_stream_ms * BYTES_PER_MS if self.max_stream_ms is not None else None
        fault_at = fault.after_ms * BYTES_PER_MS if fault is not None and fault.kind != "refuse" else None
        async for request in requests:
            kind = speech.StreamingRecognizeRequest.pb(request).WhichOneof("streaming_request") or ""
            stream.kinds.append(kind)
            if len(stream.kinds) == 1:
                stream.config = request
                await self._check_config(stream, context, request)
                if fault is not None and fault.kind == "refuse":
                    await self._abort(stream, context, fault.code, "the fake was told to refuse this stream")
                continue
            if kind != "audio" or request.recognizer:
                await self._abort(stream, context, grpc.StatusCode.INVALID_ARGUMENT, "only audio may follow the config")
            audio = request.audio
            stream.sizes.append(len(audio))
            stream.audio += audio
            if len(audio) > MAX_AUDIO_BYTES:
                why = f"Audio chunk can be of a maximum of {MAX_AUDIO_BYTES} bytes. Received audio of {len(audio)} bytes instead."
                await self._abort(stream, context, grpc.StatusCode.INVALID_ARGUMENT, why)
            stop = min(x for x in (limit, fault_at, stream.recognised + len(audio)) if x is not None)
            usable = audio[: max(stop - stream.recognised, 0)]
            stream.recognised += len(usable)
            for response in self._responses(recogniser, usable):
                result = response.results[0]
                if result.is_final and self.final_delay_s:
                    await asyncio.sleep(self.final_delay_s)  # a slow final; the interims before it are out
                text = result.alternatives[0].transcript
                if result.is_final:
                    stream.finals.append((text, round(result.result_end_offset.total_seconds() * RATE) * 2))
                else:
                    stream.interims.append(text)
                stream.billed_ms = round(response.metadata.total_billed_duration.total_seconds() * 1000)
                yield response
            if fault_at is not None and stream.recognised >= fault_at:
                assert fault is not None
                if fault.kind == "drop":
                    return  # the stream ends with OK, and no word of why
                code = grpc.StatusCode.INTERNAL if fault.kind == "internal" else grpc.StatusCode.UNAVAILABLE
                await self._abort(stream, context, code, f"the fake was told to fail with {code.name}")
            if limit is not None and stream.recognised >= limit:
                await self._abort(
                    stream, context, grpc.StatusCode.ABORTED, "Max duration of 5 minutes reached for stream."
                )

    def _responses(self, recogniser: _Recogniser, pcm: bytes) -> list[speech.StreamingRecognizeResponse]:
        responses = []
        for is_final, text, end in recogniser.feed(pcm):
            result = speech.StreamingRecognitionResult(
                alternatives=[
                    speech.SpeechRecognitionAlternative(transcript=text, confidence=0.9 if is_final else 0.0)
                ],
                is_final=is_final,
                stability=0.0 if is_final else 0.5,
                result_end_offset=timedelta(milliseconds=end / BYTES_PER_MS),
                language_code=self.language.lower(),
            )
            billed = timedelta(milliseconds=recogniser.frames * 20)  # all the stream's audio heard so far
            metadata = speech.RecognitionResponseMetadata(total_billed_duration=billed)
            responses.append(speech.StreamingRecognizeResponse(results=[result], metadata=metadata))
        return responses

    async def _check_config(
        self, stream: RecordedStream, context: grpc.aio.ServicerContext, request: speech.StreamingRecognizeRequest
    ) -> None:
        if stream.kinds[0] != "streaming_config" or not _RECOGNIZER.fullmatch(request.recognizer):
            why = "the first request must carry a recognizer and streaming_config, and no audio"
            await self._abort(stream, context, grpc.StatusCode.INVALID_ARGUMENT, why)
        config = request.streaming_config.config
        decoding = config.explicit_decoding_config
        if (
            decoding.encoding != speech.ExplicitDecodingConfig.AudioEncoding.LINEAR16
            or decoding.sample_rate_hertz != RATE
            or decoding.audio_channel_count != 1
        ):
            await self._abort(
                stream, context, grpc.StatusCode.INVALID_ARGUMENT, "the fake decodes LINEAR16 16 kHz mono only"
            )
        if config.model != self.model or list(config.language_codes) != [self.language]:
            await self._abort(stream, context, grpc.StatusCode.INVALID_ARGUMENT, "unexpected model or language")
        if not request.streaming_config.streaming_features.interim_results:
            await self._abort(stream, context, grpc.StatusCode.INVALID_ARGUMENT, "the fake expects interim results on")

    async def _abort(
        self, stream: RecordedStream, context: grpc.aio.ServicerContext, code: grpc.StatusCode, why: str
    ) -> None:
        stream.status = code.name
        await context.abort(code, why)
