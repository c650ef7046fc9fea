"""One session's StreamingRecognize streams: opened at once, fed as audio arrives, replaced as needed.

A stream is replaced, and the audio the service had not finalised is sent again on the new one, when
it nears the service's five-minute limit (rollover), when the service ends it (ABORTED "Max duration
of 5 minutes reached for stream."), and after UNAVAILABLE, INTERNAL or a dropped stream, with backoff.
Only when the retries are exhausted does the failure reach the session. With nothing unfinalised, a
stream that ends is simply opened again when audio comes: the service also closes idle streams.

Audio goes out in messages of at least MIN_AUDIO_BYTES (100 ms, the service's own advice), not one
per 20 ms frame pushed: each grpc.aio write costs ~80 us of CPU (a completion-queue round trip through
gRPC's poller thread), which made the writes the dearest part of a call while the user speaks. A turn's
end (`flush`) sends whatever is left at once, so no turn waits for its last 80 ms.

grpc.aio reports INTERNAL "Internal error from Core" instead of the service's status when a write
races the status (grpc/grpc#36066). So a retry writes its config and then holds its audio for the
backoff: a service that refuses the stream does so in that quiet time, and its real status is seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from google.api_core.exceptions import GoogleAPICallError
from google.cloud.speech_v2.types import cloud_speech

from agent_bridge.google_stt_audio import BYTES_PER_MS, SentAudio, duration_ms
from agent_bridge.interfaces import EngineError

if TYPE_CHECKING:
    from google.api_core.grpc_helpers_async import GrpcAsyncStream

log = logging.getLogger(__name__)

ENGINE = "google-stt"
MAX_AUDIO_BYTES = 25_600  # the service refuses larger audio messages (INVALID_ARGUMENT)
MIN_AUDIO_BYTES = 100 * BYTES_PER_MS  # audio is held until there is this much to send (or a flush)
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,  # cancelled by the server or a proxy: a dropped stream
    }
)
# The stream's own end of life: the duration limit, or an idle stream (OUT_OF_RANGE "Audio Timeout").
_EXPIRED = frozenset({grpc.StatusCode.ABORTED, grpc.StatusCode.OUT_OF_RANGE})

Response = cloud_speech.StreamingRecognizeResponse
Request = cloud_speech.StreamingRecognizeRequest


@dataclass(frozen=True)
class StreamTuning:
    rollover_after_s: float = 270.0  # replace a stream before the service's 5 minutes (audio sent or time open)
    final_wait_s: float = 1.0  # how long a turn waits for its final result once its audio is sent
    turn_end_silence_ms: int = 800  # silence sent after a turn, so the service finalises its last words
    max_retries: int = 5  # failed streams in a row before the failure is reported
    backoff_s: float = 0.25  # before the first retry, doubled for each further one
    max_backoff_s: float = 4.0


@dataclass(eq=False)
class LiveStream:
    base: int  # the position of the first audio byte it carries
    opened_at: float
    sent: int = field(init=False)  # the position after the last byte written
    call: GrpcAsyncStream[Response] | Any = None
    billed_ms: int = 0  # the service's running total for this stream
    cut: str | None = None  # why we ended it ourselves
    error: BaseException | None = None
    hold_s: float = 0.0  # quiet time between the config and the audio (a retry's backoff)
    config_sent: bool = False

    def __post_init__(self) -> None:
        self.sent = self.base


class StreamRunner:
    """Runs the streams of one session on one task; the session reads `current` and the hooks' calls."""

    def __init__(
        self,
        audio: SentAudio,
        tuning: StreamTuning,
        open_call: Callable[[], Awaitable[Any]],
        config_request: Request,
        on_response: Callable[[LiveStream, Response], None],
        on_failure: Callable[[EngineError], None],
        on_progress: Callable[[], None],
    ) -> None:
        self._audio = audio
        self._tuning = tuning
        self._open_call = open_call
        self._config_request = config_request
        self._on_response = on_response
        self._on_failure = on_failure
        self._on_progress = on_progress
        self.current: LiveStream | None = None
        self.streams_opened = 0
        self._billed_before_ms = 0  # the totals of the streams that ended
        self._failed = False
        self._hold_s = 0.0  # the next stream's hold_s
        self._flush_until = 0  # audio up to here is sent without waiting for MIN_AUDIO_BYTES
        self._wake = asyncio.Event()  # audio to send, or a failure taken
        # Pushed audio wakes the waiting task only once the audio ends here: a writer waiting for
        # MIN_AUDIO_BYTES is not woken (a task step) by each of the 20 ms frames before.
        self._wake_at = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def billed_ms(self) -> int:
        current = self.current.billed_ms if self.current is not None else 0
        return self._billed_before_ms + current

    def start(self) -> None:
        """Start streaming, if there is a running loop to stream on (else at a later call)."""
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._task = loop.create_task(self._run(), name="google-stt-streams")

    def wake(self) -> None:
        """Audio was pushed."""
        if self._audio.end >= self._wake_at:
            self._wake.set()

    def flush(self) -> None:
        """Send all the audio there is now, however little (a turn's end)."""
        self._flush_until = self._audio.end
        self._wake.set()

    def resume(self) -> None:
        """The session took the reported failure: stream again when there is audio."""
        self._failed = False
        self._wake.set()

    def cut(self, reason: str) -> None:
        """End the current stream now; the next one starts at the audio not finalised."""
        stream = self.current
        if stream is not None and stream.cut is None:
            stream.cut = reason
            if stream.call is not None:
                stream.call.cancel()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        attempt = 0
        idle = False
        while True:
            while self._failed or (idle and not self._audio.unfinalised):
                self._wake_at = 0
                self._wake.clear()
                await self._wake.wait()
            idle = False
            stream = await self._one_stream()
            self._billed_before_ms += stream.billed_ms
            verdict, why = _verdict(stream)
            # A stream that finalised audio worked: only failures in a row without progress count.
            progressed = self._audio.final_mark > stream.base
            if progressed:
                attempt = 0
            if verdict == "cut" or (verdict == "expired" and progressed and self._audio.unfinalised):
                continue  # ours, or the service's own limit: straight to the next stream
            if not self._audio.unfinalised:
                log.debug("speech stream ended with nothing pending (%s); reopening when audio comes", why)
                idle, attempt = True, 0
                continue
            attempt += 1
            if verdict == "fatal" or attempt > self._tuning.max_retries:
                self._failed = True
                self._on_failure(EngineError(ENGINE, f"speech stream failed after {attempt} attempt(s): {why}"))
                attempt = 0
                continue
            delay = min(self._tuning.backoff_s * 2 ** (attempt - 1), self._tuning.max_backoff_s)
            log.info("speech stream ended (%s); retry %d in %.2f s", why, attempt, delay)
            if stream.config_sent:
                self._hold_s = delay  # the service took a stream before: back off between config and audio
            else:
                await asyncio.sleep(delay)  # it could not even be opened: back off before opening again

    async def _one_stream(self) -> LiveStream:
        self._audio.skip_added_silence()
        stream = LiveStream(
            base=self._audio.final_mark, opened_at=asyncio.get_running_loop().time(), hold_s=self._hold_s
        )
        self._hold_s = 0.0
        self.current = stream
        self.streams_opened += 1
        writer: asyncio.Task[None] | None = None
        try:
            stream.call = await self._open_call()
            if stream.cut is not None:
                return stream
            writer = asyncio.get_running_loop().create_task(self._write(stream), name="google-stt-writer")
            async for response in stream.call:
                if stream.cut is not None:
                    break
                billed = duration_ms(response.metadata.total_billed_duration)
                stream.billed_ms = max(stream.billed_ms, billed)
                self._on_response(stream, response)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if stream.cut is None or (task is not None and task.cancelling()):
                raise  # the session is closing
        except Exception as exc:  # noqa: BLE001 - a status, missing credentials or a bug: _verdict judges it
            if stream.cut is None:
                stream.error = exc
        finally:
            self.current = None
            if stream.call is not None:
                stream.call.cancel()
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
        return stream

    async def _write(self, stream: LiveStream) -> None:
        """Config first, then the audio not finalised, in messages of at most MAX_AUDIO_BYTES."""
        call = stream.call
        try:
            await call.write(self._config_request)
            stream.config_sent = True
            if stream.hold_s:
                await asyncio.sleep(stream.hold_s)
            while stream.cut is None:
                pending = self._audio.end - stream.sent
                if pending <= 0 or (pending < MIN_AUDIO_BYTES and stream.sent >= self._flush_until):
                    self._wake_at = stream.sent + MIN_AUDIO_BYTES
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self._due_for_rollover(stream):
                    log.debug("speech stream rolls over after %.1f s", self._age_s(stream))
                    self.cut("rollover")
                    return
                chunk = self._audio.read(stream.sent, MAX_AUDIO_BYTES)
                await call.write(Request(audio=chunk))
                stream.sent += len(chunk)
                self._on_progress()
        except (asyncio.InvalidStateError, GoogleAPICallError, grpc.RpcError):
            return  # the call has ended; the reader has its status
        except Exception as exc:
            log.exception("speech stream writer failed")
            stream.error = exc
            self.cut("writer failed")

    def _age_s(self, stream: LiveStream) -> float:
        audio_s = (stream.sent - stream.base) / (BYTES_PER_MS * 1000)
        return max(audio_s, asyncio.get_running_loop().time() - stream.opened_at)

    def _due_for_rollover(self, stream: LiveStream) -> bool:
        # Only once this stream has finalised something: a new one would otherwise resend all it got.
        return self._age_s(stream) >= self._tuning.rollover_after_s and self._audio.final_mark > stream.base


def _verdict(stream: LiveStream) -> tuple[str, str]:
    """What to do after a stream ended: "cut", "expired", "retry" or "fatal", and why, for the log."""
    if stream.error is None:
        if stream.cut is not None:
            return "cut", stream.cut
        return "retry", "the service ended the stream"
    exc = stream.error
    code = getattr(exc, "grpc_status_code", None)
    if code is None and isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        code = exc.code()  # an error the client library did not map
    why = f"{code.name}: {getattr(exc, 'message', exc)}" if code is not None else f"{type(exc).__name__}: {exc}"
    if code is grpc.StatusCode.INTERNAL and "Internal error from Core" in why:
        why = "the stream ended while audio was being written (grpc.aio hid the service's status)"
    if code is grpc.StatusCode.OUT_OF_RANGE or (code in _EXPIRED and "duration" in why.lower()):
        return "expired", why
    if code in _RETRYABLE:
        return "retry", why
    return "fatal", why
