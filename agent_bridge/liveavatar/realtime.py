"""The LiveAvatar realtime WebSocket of a LITE session: our audio in, the avatar's state out.

We send agent.speak (base64 PCM16 24 kHz mono, ~1 s per frame, under 1 MB per frame, one event_id
for every frame of an utterance), agent.speak_end, agent.interrupt and session.keep_alive. The
service drops every command it gets before it reports session.state_updated "connected" (that
waits for the avatar to be up in its room), so until then commands are held here, bounded, and
sent in order once it is connected. The states, each move checked:

    new -> connecting -> open (socket up, service not ready) -> ready -> closed
    any state -> closed (aclose, or the socket dropped)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp

from agent_bridge.liveavatar.errors import (
    LiveAvatarError,
    LiveAvatarServiceError,
    LiveAvatarStateError,
    error_for_status,
)
from agent_bridge.liveavatar.events import (
    RealtimeEvent,
    SocketClosed,
    StateUpdated,
    command,
    new_event_id,
    parse_event,
)
from agent_bridge.liveavatar.frames import (
    BYTES_PER_SECOND,
    Frame,
    HeldFrames,
    SpeakFramer,
)

log = logging.getLogger(__name__)

_QUEUE_LIMIT = 256  # events kept for events() when nobody reads them: the oldest go first


class RealtimeState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    OPEN = "open"
    READY = "ready"
    CLOSED = "closed"


_MOVES: dict[RealtimeState, frozenset[RealtimeState]] = {
    RealtimeState.NEW: frozenset({RealtimeState.CONNECTING, RealtimeState.CLOSED}),
    RealtimeState.CONNECTING: frozenset({RealtimeState.OPEN, RealtimeState.CLOSED}),
    RealtimeState.OPEN: frozenset({RealtimeState.READY, RealtimeState.CLOSED}),
    RealtimeState.READY: frozenset({RealtimeState.CLOSED}),
    RealtimeState.CLOSED: frozenset(),
}


class LiveAvatarRealtime:
    """One realtime socket. Make and use it on one event loop; `aclose()` is idempotent."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        ws_url: str,
        *,
        on_event: Callable[[RealtimeEvent], None] | None = None,
        chunk_ms: int = 1000,
        max_pending_audio_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        close_timeout_s: float = 2.0,
        heartbeat_s: float | None = 30.0,
    ) -> None:
        self._http = http
        self._ws_url = ws_url
        self._on_event = on_event
        self._framer = SpeakFramer(chunk_ms)
        self._held = HeldFrames(max_pending_audio_s)
        self._connect_timeout = connect_timeout_s
        self._close_timeout = close_timeout_s
        self._heartbeat = heartbeat_s
        self._state = RealtimeState.NEW
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # keeps frames in order: held while sending or flushing
        self._ready = asyncio.Event()
        self._events: asyncio.Queue[RealtimeEvent | None] = asyncio.Queue()
        self._closing = False
        self._finished = False
        self.last_sent_at = time.monotonic()  # of the last frame sent: the keep-alive loop reads it
        self.audio_bytes_sent = 0

    # -- state ----------------------------------------------------------------------------------

    @property
    def state(self) -> RealtimeState:
        return self._state

    @property
    def utterance_id(self) -> str | None:
        return self._framer.utterance_id

    @property
    def pending_audio_s(self) -> float:
        return self._held.audio_bytes / BYTES_PER_SECOND

    def _move(self, new: RealtimeState) -> None:
        if new not in _MOVES[self._state]:
            raise LiveAvatarStateError(f"realtime: {self._state.value} -> {new.value} is not allowed")
        log.debug("liveavatar realtime: %s -> %s", self._state.value, new.value)
        self._state = new

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the service says "connected"; False if it did not in time or the socket ended."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return self._state is RealtimeState.READY

    # -- connecting and closing -----------------------------------------------------------------

    async def connect(self) -> None:
        """Open the socket and start reading. Raises LiveAvatarError; the socket is then closed."""
        self._move(RealtimeState.CONNECTING)
        try:
            async with asyncio.timeout(self._connect_timeout):
                ws = await self._http.ws_connect(
                    self._ws_url,
                    heartbeat=self._heartbeat,
                    timeout=aiohttp.ClientWSTimeout(ws_close=self._close_timeout),
                    max_msg_size=4 * 1024 * 1024,
                )
        except BaseException as exc:
            if self._state is not RealtimeState.CLOSED:
                self._move(RealtimeState.CLOSED)
            self._finish(expected=True, code=None, reason="connect failed")  # the caller gets the error
            if isinstance(exc, aiohttp.WSServerHandshakeError):
                raise error_for_status(exc.status, "the socket was refused", None, op="realtime") from None
            if isinstance(exc, TimeoutError):
                raise LiveAvatarServiceError(f"realtime: no socket within {self._connect_timeout:g} s") from None
            if isinstance(exc, aiohttp.ClientError):
                raise LiveAvatarServiceError(f"realtime: cannot connect: {exc or type(exc).__name__}") from None
            raise
        if self._state is RealtimeState.CLOSED:  # aclose() ran while connecting
            await ws.close()
            raise LiveAvatarStateError("realtime: closed while connecting")
        self._ws = ws
        self._move(RealtimeState.OPEN)
        self._reader = asyncio.create_task(self._read(ws), name="liveavatar-realtime-reader")

    async def aclose(self) -> None:
        """Close the socket and stop reading; held commands are dropped. Safe to call again."""
        self._closing = True
        if self._state is not RealtimeState.CLOSED:
            self._move(RealtimeState.CLOSED)
        self._held.clear()
        ws, reader = self._ws, self._reader
        self._reader = None
        if ws is not None and not ws.closed:
            try:
                async with asyncio.timeout(self._close_timeout + 1):
                    await ws.close()
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                pass  # aiohttp drops the connection itself once its close timeout passes
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        self._finish(expected=True, code=ws.close_code if ws is not None else None, reason="closed by us")

    # -- commands -------------------------------------------------------------------------------

    async def speak(self, pcm24k: bytes) -> str:
        """Send audio of the current utterance (PCM16 24 kHz mono), cut into ~chunk_ms frames.

        Returns the utterance's event_id: the first speak after speak_end() or interrupt() opens
        a new utterance. Before the service is connected the frames are held (up to
        max_pending_audio_s, beyond that LiveAvatarStateError).
        """
        self._check_open()
        event_id, frames = self._framer.speak(pcm24k)
        await self._emit(frames)
        return event_id

    async def speak_end(self) -> str | None:
        """End the current utterance: the avatar finishes what it holds, then says speak_ended."""
        self._check_open()
        ended = self._framer.end()
        if ended is None:
            return None  # nothing was said since the last end
        await self._emit([ended[1]])
        return ended[0]

    async def interrupt(self) -> str | None:
        """Stop the avatar at once and drop what it holds; the next speak opens a new utterance.

        Returns the interrupt's own event_id, or None when nothing had reached the service
        (the held frames are simply dropped then).
        """
        self._check_open()
        self._framer.reset()
        async with self._lock:
            self._held.clear()  # held frames are stale now, whether or not the service is ready
            if self._state is not RealtimeState.READY:
                return None
            event_id = new_event_id()
            await self._send(command("agent.interrupt", event_id))
            return event_id

    async def keep_alive(self) -> bool:
        """Send session.keep_alive; False (nothing sent) while the service is not connected."""
        async with self._lock:
            if self._state is not RealtimeState.READY:
                return False
            await self._send(command("session.keep_alive"))
            return True

    async def events(self) -> AsyncIterator[RealtimeEvent]:
        """The events the socket delivers, ending after its SocketClosed."""
        while True:
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)  # other readers end too
                return
            yield event

    # -- internals ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state is RealtimeState.CLOSED:
            raise LiveAvatarStateError("realtime: the socket is closed")

    async def _emit(self, frames: list[Frame]) -> None:
        async with self._lock:
            if self._state is RealtimeState.READY:
                await self._flush()
                for frame in frames:
                    await self._send(frame.text, frame.audio_bytes)
                return
            self._check_open()
            self._held.add(frames)

    async def _flush(self) -> None:
        """Send the held frames in order (the lock is held)."""
        while self._held and self._state is RealtimeState.READY:
            frame = self._held.pop()
            await self._send(frame.text, frame.audio_bytes)

    async def _send(self, frame: str, audio: int = 0) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise LiveAvatarStateError("realtime: the socket is closed")
        try:
            await ws.send_str(frame)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise LiveAvatarServiceError(f"realtime: sending failed: {exc or type(exc).__name__}") from None
        self.last_sent_at = time.monotonic()
        self.audio_bytes_sent += audio

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        reason = ""
        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    await self._on_event_frame(parse_event(message.data))
                elif message.type is aiohttp.WSMsgType.ERROR:
                    reason = f"socket error: {ws.exception() or 'unknown'}"
                    break
            reason = reason or (f"closed by the service ({ws.close_code})" if ws.close_code else "connection lost")
        except (aiohttp.ClientError, ConnectionError) as exc:
            reason = f"connection lost: {exc or type(exc).__name__}"
        except LiveAvatarError as exc:
            reason = f"flushing held audio failed: {exc.message}"
        except Exception as exc:  # a bug here must still end the socket visibly
            log.exception("liveavatar realtime: the reader failed")
            reason = f"reader failed: {type(exc).__name__}"
        if not self._closing:
            log.warning("liveavatar realtime: the socket dropped: %s", reason)
            self._move(RealtimeState.CLOSED)
            self._held.clear()
            self._reader = None
            self._finish(expected=False, code=ws.close_code, reason=reason)
            with contextlib.suppress(Exception):
                await ws.close()

    async def _on_event_frame(self, event: RealtimeEvent) -> None:
        if isinstance(event, StateUpdated) and event.state == "connected" and self._state is RealtimeState.OPEN:
            self._move(RealtimeState.READY)
            self._ready.set()
            async with self._lock:
                await self._flush()
        self._deliver(event)

    def _finish(self, *, expected: bool, code: int | None, reason: str) -> None:
        if self._finished:
            return
        self._finished = True
        self._ready.set()  # wait_ready() returns (False) at once
        self._deliver(SocketClosed(expected=expected, code=code, reason=reason))
        self._events.put_nowait(None)

    def _deliver(self, event: RealtimeEvent) -> None:
        if self._events.qsize() >= _QUEUE_LIMIT:
            self._events.get_nowait()
        self._events.put_nowait(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("liveavatar realtime: an event handler failed")
