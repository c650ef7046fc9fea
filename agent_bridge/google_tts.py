"""Google Cloud Text-to-Speech over gRPC (grpc.aio): 24 kHz mono PCM, streamed as it arrives.

Chirp 3 HD voices use StreamingSynthesize: the first request carries only the config, the next
only text, and each audio chunk is yielded the moment it arrives, so the first words play while
the rest is still being synthesised. Other voices use SynthesizeSpeech with LINEAR16 (a WAV, whose
header is parsed off). Text is sent in pieces under the service's 5,000-byte limit.

A piece whose request fails before any of its audio was yielded is retried with backoff; once
audio went to the caller a retry would repeat it, so the failure is raised as an EngineError.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import re
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from agent_bridge.google_auth import SharedClient, check_endpoint
from agent_bridge.interfaces import EngineError, TextToSpeech, Voice
from agent_bridge.tts_payloads import WavError, split_for_requests, wav_pcm

if TYPE_CHECKING:
    import grpc.aio
    from google.cloud.texttospeech_v1 import TextToSpeechAsyncClient

ENGINE = "google-tts"
DEFAULT_VOICE = "en-US-Chirp3-HD-Charon"
DEFAULT_LANGUAGE = "en-US"
DEFAULT_ENDPOINT = "texttospeech.googleapis.com:443"
SAMPLE_RATE = 24_000
MAX_INPUT_BYTES = 5_000  # the service's limit on the text of one request

_log = logging.getLogger(__name__)
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
_VOICE = re.compile(r"^[A-Za-z0-9]+(?:-[A-Za-z0-9]+){2,}$")
# Worth another attempt: the service or the connection hiccupped, the request itself was fine.
_RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "INTERNAL"})
_WORDS = {
    "UNAVAILABLE": "the speech service is unavailable",
    "DEADLINE_EXCEEDED": "the speech service did not answer in time",
    "INVALID_ARGUMENT": "the speech service refused the request",
    "PERMISSION_DENIED": "the speech service refused the credentials",
    "UNAUTHENTICATED": "the speech service refused the credentials",
    "RESOURCE_EXHAUSTED": "the speech service quota is exhausted",
    "NOT_FOUND": "the speech service does not know this voice",
}


def voice_language(voice: str) -> str:
    """en-GB of en-GB-Neural2-A: Google's voice names start with their language code."""
    return "-".join(voice.split("-")[:2])


def is_streaming_voice(voice: str) -> bool:
    """Chirp 3 HD voices are the ones StreamingSynthesize serves."""
    return "Chirp3-HD" in voice


class _RpcFailed(Exception):
    """One attempt at one piece failed; `status` is the gRPC status name."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status


class GoogleTextToSpeech(TextToSpeech):
    """Streams int16 mono PCM at 24 kHz; one channel per process, shared by every call."""

    name = "google"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        voice: str = DEFAULT_VOICE,
        language: str = DEFAULT_LANGUAGE,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        insecure: bool = False,
        voices: Sequence[str] = (),
        timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        if not _LANGUAGE.match(language):
            raise ValueError(f"GOOGLE_TTS_LANGUAGE must be a language code like en-US, got {language!r}")
        if not _VOICE.match(voice) or not voice.lower().startswith(language.lower() + "-"):
            raise ValueError(f"GOOGLE_TTS_VOICE must be a voice of {language} like {language}-Chirp3-HD-Charon, got {voice!r}")
        if timeout_s <= 0 or attempts < 1 or backoff_s < 0:
            raise ValueError("timeout_s must be positive, attempts at least 1, backoff_s not negative")
        self.voice = voice
        self.language = language
        # The catalogue (GOOGLE_TTS_VOICES): configured, since the service's ListVoices needs the network.
        self.voice_ids = tuple(dict.fromkeys([voice, *voices]))
        for other in self.voice_ids:
            if not _VOICE.match(other):
                raise ValueError(f"GOOGLE_TTS_VOICES must hold voice names like en-GB-Neural2-A, got {other!r}")
        self.endpoint = check_endpoint(endpoint, "GOOGLE_TTS_ENDPOINT")
        self.insecure = insecure
        self.streaming = is_streaming_voice(voice)
        self.timeout_s = timeout_s  # the longest wait for the next audio before the attempt counts as failed
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.characters_synthesized = 0
        self._shared: SharedClient[TextToSpeechAsyncClient] = SharedClient(
            self.endpoint, insecure=insecure, engine=ENGINE, make_client=_make_client
        )

    async def warm_up(self) -> None:
        """Load the credentials and open the channel at start, so a missing one fails there."""
        await self._ready()

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self._check_open()
        text = text.strip()
        if not text:
            return
        client = await self._ready()
        self.characters_synthesized += len(text)
        for piece in split_for_requests(text, MAX_INPUT_BYTES):
            # aclosing: a caller that stops early ends the RPC now, not when the generator is collected.
            async with contextlib.aclosing(self._piece_with_retries(client, piece)) as chunks:
                async for chunk in chunks:
                    yield chunk

    def voices(self) -> list[Voice]:
        return [Voice(voice_id, voice_id, voice_language(voice_id)) for voice_id in self.voice_ids]

    def with_voice(self, voice_id: str) -> GoogleTextToSpeech:
        """The same channel and settings in another catalogue voice (its language is the name's prefix)."""
        if voice_id not in self.voice_ids:
            raise ValueError(f"{self.name} has no voice {voice_id!r}")
        if voice_id == self.voice:
            return self
        variant = copy.copy(self)  # shares self._shared: one channel, closed with this engine
        variant.voice, variant.language, variant.streaming = voice_id, voice_language(voice_id), is_streaming_voice(voice_id)
        return variant

    async def aclose(self) -> None:
        await self._shared.aclose()

    # -- one piece -------------------------------------------------------------------------------

    async def _piece_with_retries(self, client: TextToSpeechAsyncClient, piece: str) -> AsyncIterator[bytes]:
        for attempt in range(1, self.attempts + 1):
            yielded = False
            try:
                attempt_audio = self._stream(client, piece) if self.streaming else self._unary(client, piece)
                async with contextlib.aclosing(attempt_audio):
                    async for chunk in attempt_audio:
                        yielded = True
                        yield chunk
                return
            except _RpcFailed as failure:
                _log.warning("%s: attempt %d of %d failed: %s", ENGINE, attempt, self.attempts, failure)
                words = _WORDS.get(failure.status, "the speech service failed")
                if yielded:
                    raise EngineError(ENGINE, f"{words} ({failure.status}) after its audio had started") from failure
                if failure.status not in _RETRYABLE or attempt == self.attempts:
                    tries = f", after {attempt} attempts" if attempt > 1 else ""
                    raise EngineError(ENGINE, f"{words} ({failure.status}){tries}") from failure
            # Exponential backoff with jitter, so calls that failed together do not retry together.
            await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.75, 1.25))

    async def _stream(self, client: TextToSpeechAsyncClient, piece: str) -> AsyncIterator[bytes]:
        import grpc.aio
        from google.cloud import texttospeech_v1 as tts

        config = tts.StreamingSynthesizeConfig(
            voice=tts.VoiceSelectionParams(language_code=self.language, name=self.voice),
            streaming_audio_config=tts.StreamingAudioConfig(
                audio_encoding=tts.AudioEncoding.PCM, sample_rate_hertz=SAMPLE_RATE
            ),
        )
        requests = [
            tts.StreamingSynthesizeRequest(streaming_config=config),
            tts.StreamingSynthesizeRequest(input=tts.StreamingSynthesisInput(text=piece)),
        ]
        call = None
        try:
            async with asyncio.timeout(self.timeout_s):
                call = await client.streaming_synthesize(requests=iter(requests))
            while True:
                # Each chunk must come within timeout_s: a stalled stream is a failed attempt.
                async with asyncio.timeout(self.timeout_s):
                    response = await call.read()
                if response is grpc.aio.EOF:
                    return
                pcm = response.audio_content
                if pcm:
                    yield pcm[: len(pcm) - len(pcm) % 2]
        except Exception as exc:
            if (failure := _as_failure(exc)) is None:
                raise
            raise failure from exc
        finally:
            if call is not None:
                call.cancel()  # a no-op once finished; stops the service when the caller quits early

    async def _unary(self, client: TextToSpeechAsyncClient, piece: str) -> AsyncIterator[bytes]:
        from google.cloud import texttospeech_v1 as tts

        request = tts.SynthesizeSpeechRequest(
            input=tts.SynthesisInput(text=piece),
            voice=tts.VoiceSelectionParams(language_code=self.language, name=self.voice),
            audio_config=tts.AudioConfig(audio_encoding=tts.AudioEncoding.LINEAR16, sample_rate_hertz=SAMPLE_RATE),
        )
        # The whole piece is synthesised before the answer: allow more time for longer text.
        deadline = self.timeout_s * (1 + len(piece.encode("utf-8")) // 1000)
        try:
            response = await client.synthesize_speech(request=request, timeout=deadline)
        except Exception as exc:
            if (failure := _as_failure(exc)) is None:
                raise
            raise failure from exc
        try:
            pcm = wav_pcm(response.audio_content, SAMPLE_RATE)
        except WavError as exc:
            raise EngineError(ENGINE, f"the speech service sent unplayable audio: {exc}") from exc
        if pcm:
            yield pcm

    # -- the channel -----------------------------------------------------------------------------

    async def _ready(self) -> TextToSpeechAsyncClient:
        return await self._shared.get()

    def _check_open(self) -> None:
        self._shared.check_open()


def _make_client(channel: grpc.aio.Channel) -> TextToSpeechAsyncClient:
    from google.cloud.texttospeech_v1 import TextToSpeechAsyncClient
    from google.cloud.texttospeech_v1.services.text_to_speech.transports import (
        TextToSpeechGrpcAsyncIOTransport,
    )

    # Given a channel, the transport neither looks for credentials nor opens a channel of its own.
    return TextToSpeechAsyncClient(transport=TextToSpeechGrpcAsyncIOTransport(channel=channel))


def _as_failure(exc: BaseException) -> _RpcFailed | None:
    """The gRPC status of a failed attempt, from whichever layer raised it; other errors pass through."""
    import grpc
    from google.api_core import exceptions as api_exceptions

    if isinstance(exc, TimeoutError):
        return _RpcFailed("DEADLINE_EXCEEDED", "no audio within the timeout")
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        code = exc.grpc_status_code
        return _RpcFailed(code.name if code is not None else "UNKNOWN", exc.message or type(exc).__name__)
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        return _RpcFailed(exc.code().name, str(exc.details() if callable(getattr(exc, "details", None)) else exc))
    return None
