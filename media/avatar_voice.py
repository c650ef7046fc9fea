"""The avatar's speaking side as calls that return at once: sends go out in order on one task.

The voice loop runs on the event loop and must never wait for a socket, so speak, speak_end and
interrupt are queued here and sent by a single sender. An interrupt jumps the queue: speech still
waiting to be sent is dropped, and the interrupt goes out next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol


class RealtimeSpeaker(Protocol):
    async def speak(self, pcm24k: bytes) -> Any: ...
    async def speak_end(self) -> Any: ...
    async def interrupt(self) -> Any: ...


class OrderedVoice:
    def __init__(self, speaker: RealtimeSpeaker, on_failed: Callable[[BaseException], None]) -> None:
        self._speaker = speaker
        self._on_failed = on_failed
        self._pending: deque[tuple[str, bytes | None]] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._sender = asyncio.ensure_future(self._send_all())

    def speak(self, pcm24k: bytes) -> None:
        self._queue("speak", pcm24k)

    def speak_end(self) -> None:
        self._queue("speak_end", None)

    def interrupt(self) -> None:
        self._pending.clear()
        self._queue("interrupt", None)

    def _queue(self, op: str, payload: bytes | None) -> None:
        if self._closed:
            return
        self._pending.append((op, payload))
        self._wake.set()

    async def _send_all(self) -> None:
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            op, payload = self._pending.popleft()
            try:
                if op == "speak":
                    assert payload is not None
                    await self._speaker.speak(payload)
                elif op == "speak_end":
                    await self._speaker.speak_end()
                else:
                    await self._speaker.interrupt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._closed = True
                self._pending.clear()
                self._on_failed(exc)
                return

    async def aclose(self) -> None:
        self._closed = True
        self._pending.clear()
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender
