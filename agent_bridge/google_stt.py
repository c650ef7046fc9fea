"""Google Cloud Speech-to-Text v2 over gRPC: one endless StreamingRecognize stream per call.

Audio goes to the service as it is pushed; interim results become interim transcripts. Turns are
ours (the pipeline's VAD and turn detector): finish_turn sends a short silence so the service
finalises the turn's last words, waits for that final a bounded time, and otherwise takes the last
interim. Streams are replaced without losing or repeating audio (agent_bridge.google_stt_stream).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from google.api_core.gapic_v1 import routing_header

from agent_bridge.google_auth import SharedClient
from agent_bridge.google_stt_audio import (
    BYTES_PER_MS,
    FinalText,
    SentAudio,
    offset_bytes,
)
from agent_bridge.google_stt_settings import GoogleSpeechSettings
from agent_bridge.google_stt_stream import (
    ENGINE,
    LiveStream,
    Response,
    StreamRunner,
    StreamTuning,
)
from agent_bridge.interfaces import (
    EngineError,
    InterimCallback,
    SpeechToText,
    SpeechToTextSession,
    Transcript,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import grpc.aio
    from google.cloud.speech_v2 import SpeechAsyncClient

log = logging.getLogger(__name__)


class GoogleSpeechToText(SpeechToText):
    """One gRPC channel per process; each call's session holds one stream on it at a time."""

    name = "google"

    def __init__(self, settings: GoogleSpeechSettings, tuning: StreamTuning | None = None) -> None:
        self.settings = settings
        self.tuning = tuning or StreamTuning()
        self._shared: SharedClient[SpeechAsyncClient] = SharedClient(
            settings.endpoint, insecure=settings.insecure, engine=ENGINE, make_client=self._make_client
        )
        self._metadata = routing_header.to_grpc_metadata((("recognizer", settings.recognizer),))
        self.config_request = settings.config_request()

    async def warm_up(self) -> None:
        """Load the credentials and open the channel at start, so a missing one fails there."""
        await self._ready()

    def open_session(
        self, on_interim: InterimCallback, on_error: Callable[[EngineError], None] | None = None
    ) -> GoogleSpeechSession:
        """`on_error` hears of a failure as it happens; finish_turn raises it for the turn it cost."""
        self._shared.check_open()
        return GoogleSpeechSession(self, on_interim, on_error)

    async def open_call(self) -> Any:
        """A new StreamingRecognize call, its requests to be written by the caller."""
        client = await self._ready()
        return await client.streaming_recognize(metadata=[self._metadata])

    async def aclose(self) -> None:
        await self._shared.aclose()

    async def _ready(self) -> SpeechAsyncClient:
        return await self._shared.get()

    def _make_client(self, channel: grpc.aio.Channel) -> SpeechAsyncClient:
        from google.cloud.speech_v2 import SpeechAsyncClient
        from google.cloud.speech_v2.services.speech.transports import (
            SpeechGrpcAsyncIOTransport,
        )

        # With a channel given, the transport takes no credentials of its own: they are the channel's.
        transport = SpeechGrpcAsyncIOTransport(host=self.settings.endpoint, channel=channel)
        return SpeechAsyncClient(transport=transport)


class GoogleSpeechSession(SpeechToTextSession):
    def __init__(
        self,
        engine: GoogleSpeechToText,
        on_interim: InterimCallback,
        on_error: Callable[[EngineError], None] | None,
    ) -> None:
        self._engine = engine
        self._tuning = engine.tuning
        self._on_interim = on_interim
        self._on_error = on_error
        self._audio = SentAudio()
        self._finals: list[FinalText] = []  # finalised text not yet taken by a turn
        self._interim = ""  # the service's latest text past the last final
        self._published = ""  # the last interim text given, not to give it twice
        self._turn_start = 0  # the session clock (bytes pushed) where the current turn began
        self._turn_mark = 0  # the position where the current turn's audio begins
        self._discard = (0, 0)  # positions of audio whose text a reset() dropped
        self._failure: EngineError | None = None
        self._closed = False
        self._changed = asyncio.Event()  # replaced at every change; finish_turn waits on it
        self._runner = StreamRunner(
            self._audio,
            self._tuning,
            engine.open_call,
            engine.config_request,
            self._on_response,
            self._on_failure,
            self._notify,
        )
        self._runner.start()  # the stream opens with the session (or at the first push, without a loop yet)

    @property
    def audio_ms_transcribed(self) -> int:
        """Audio the service billed, in ms, across all of this call's streams."""
        return self._runner.billed_ms

    @property
    def streams_opened(self) -> int:
        return self._runner.streams_opened

    def push(self, pcm: bytes) -> None:
        self._check_open()
        if not pcm:
            return
        self._audio.append(pcm[: len(pcm) // 2 * 2])
        self._runner.start()
        self._runner.wake()

    async def finish_turn(self) -> Transcript | None:
        self._check_open()
        self._runner.start()
        start_ms, end_ms = self._turn_start // BYTES_PER_MS, self._audio.pushed // BYTES_PER_MS
        self._turn_start = self._audio.pushed
        speech_end = self._audio.end
        if speech_end > self._audio.final_mark:
            # The pipeline stops feeding at the turn's end; without silence the service would keep the
            # last words open until the next turn's audio.
            self._audio.append_silence(self._tuning.turn_end_silence_ms * BYTES_PER_MS)
        self._runner.flush()
        until = self._turn_mark = self._audio.end  # audio after this belongs to the next turn
        self._published = ""
        tail = ""
        if not await self._wait_for_final(speech_end, until):
            # No final in time: the last interim stands for the rest. Cut the stream there so the
            # service cannot finalise the same words again into the next turn.
            tail, self._interim = self._interim, ""
            if self._audio.final_mark < until:
                self._runner.cut("turn ended without a final")
                self._audio.finalise(until)
        taken = [final for final in self._finals if final.end <= until]
        self._finals = [final for final in self._finals if final.end > until]
        texts = [final.text for final in taken] + ([tail] if tail else [])
        if not texts:
            return None
        if taken and not tail:
            end_ms = min(taken[-1].end_ms, end_ms)
        return Transcript(text=" ".join(texts), final=True, start_ms=start_ms, end_ms=max(end_ms, start_ms))

    def reset(self) -> None:
        """Forget the turn so far: text the service finalises for its audio is dropped as it comes."""
        self._check_open()
        self._finals = [final for final in self._finals if final.end <= self._turn_mark]
        if self._audio.final_mark >= self._turn_mark and self._audio.unfinalised:
            # No earlier turn is waiting for its final: end the stream here, so none of this audio
            # is finalised at all.
            self._runner.cut("turn reset")
            self._audio.finalise(self._audio.end)
        elif self._audio.end > self._turn_mark:
            # An earlier turn still needs this stream: a silence keeps this audio's words apart from the
            # next turn's, so that their final falls in the range dropped.
            self._audio.append_silence(self._tuning.turn_end_silence_ms * BYTES_PER_MS)
            self._runner.flush()
        self._discard = (self._turn_mark, self._audio.end)
        self._interim = self._published = ""
        self._turn_start = self._audio.pushed
        self._turn_mark = self._audio.end

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._notify()
        await self._runner.aclose()
        # Let go of the pipeline's callbacks, so a closed call is freed without waiting for a full collection.
        self._on_interim = _no_interim
        self._on_error = None

    async def _wait_for_final(self, speech_end: int, until: int) -> bool:
        """True once the service finalised the audio up to `speech_end`, False when the wait ran out.

        The wait starts when the turn's audio (and its silence) has been sent, not before: a stream
        being replaced first sends again what it had not finalised.
        """
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            if self._closed:
                raise EngineError(ENGINE, "session is closed")
            if self._failure is not None:
                raise self._take_failure(until)
            if self._audio.final_mark >= speech_end:
                return True
            stream = self._runner.current
            if deadline is None and stream is not None and stream.sent >= until:
                deadline = loop.time() + self._tuning.final_wait_s
            changed = self._changed
            if deadline is None:
                await changed.wait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return False

    def _on_response(self, stream: LiveStream, response: Response) -> None:
        if not response.results:
            return
        interims: list[str] = []
        for result in response.results:
            text = result.alternatives[0].transcript.strip() if result.alternatives else ""
            if not result.is_final:
                if text:
                    interims.append(text)
                continue
            # Times are the stream's own: from where it began in the session's audio.
            end = min(max(stream.base + offset_bytes(result.result_end_offset), self._audio.final_mark), stream.sent)
            if text and not self._discard[0] < end <= self._discard[1]:
                self._finals.append(FinalText(text, end, self._audio.session_ms(end)))
            self._audio.finalise(end)
        self._interim = " ".join(interims)
        self._publish_interim()
        self._notify()

    def _publish_interim(self) -> None:
        pending = [final.text for final in self._finals if final.end > self._turn_mark]
        text = " ".join([*pending, self._interim] if self._interim else pending)
        if not text or text == self._published:
            return
        self._published = text
        start_ms = self._turn_start // BYTES_PER_MS
        end_ms = max(self._audio.pushed // BYTES_PER_MS, start_ms)
        try:
            self._on_interim(Transcript(text=text, final=False, start_ms=start_ms, end_ms=end_ms))
        except Exception:
            log.exception("interim transcript callback failed")

    def _on_failure(self, error: EngineError) -> None:
        log.warning("%s", error)
        self._failure = error
        self._notify()
        if self._on_error is not None:
            try:
                self._on_error(error)
            except Exception:
                log.exception("speech error callback failed")

    def _take_failure(self, until: int) -> EngineError:
        """The failure, for the turn ending at `until`: its audio is given up, streaming resumes after it."""
        error, self._failure = self._failure, None
        assert error is not None
        self._audio.finalise(until)
        self._finals = [final for final in self._finals if final.end > until]
        self._interim = ""
        self._runner.resume()
        return error

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(ENGINE, "session is closed")


def _no_interim(_: Transcript) -> None:
    """A closed session's interim callback."""
