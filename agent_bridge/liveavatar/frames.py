"""Our audio as agent.speak frames, and the frames held while the service is not yet connected.

An utterance is every frame between two speak_end/interrupt; all its frames carry the same
event_id (the service echoes it in speak_started/ended). Frames are ~chunk_ms of audio, whole
16-bit samples, far under the documented 1 MB per message.
"""

from __future__ import annotations

import base64
from collections import deque
from typing import NamedTuple

from agent_bridge.liveavatar.errors import LiveAvatarStateError
from agent_bridge.liveavatar.events import command, new_event_id

SAMPLE_RATE = 24_000
BYTES_PER_SECOND = SAMPLE_RATE * 2  # PCM16 mono
MAX_FRAME_BYTES = 1_000_000  # the documented 1 MB per message, read as the smaller meaning


class Frame(NamedTuple):
    text: str
    audio_bytes: int  # of PCM it carries, 0 for a command without audio


class SpeakFramer:
    """Cuts each utterance's audio into frames and hands out its event_id."""

    def __init__(self, chunk_ms: int = 1000) -> None:
        if not 20 <= chunk_ms <= 10_000:
            raise ValueError("chunk_ms must be within 20..10000")
        self.chunk_bytes = BYTES_PER_SECOND * chunk_ms // 1000 // 2 * 2
        assert self.chunk_bytes * 4 // 3 + 200 < MAX_FRAME_BYTES
        self.utterance_id: str | None = None
        self._carry = b""  # an odd trailing byte, completed by the next speak

    def speak(self, pcm24k: bytes) -> tuple[str, list[Frame]]:
        if self.utterance_id is None:
            self.utterance_id = new_event_id()
        event_id = self.utterance_id
        data = self._carry + bytes(pcm24k)
        whole = len(data) // 2 * 2
        self._carry = data[whole:]
        pieces = [data[i : min(i + self.chunk_bytes, whole)] for i in range(0, whole, self.chunk_bytes)]
        frames = [Frame(command("agent.speak", event_id, audio=base64.b64encode(p).decode()), len(p)) for p in pieces]
        return event_id, frames

    def end(self) -> tuple[str, Frame] | None:
        """The speak_end of the open utterance; None when nothing was said since the last end."""
        event_id = self.utterance_id
        self.reset()
        return None if event_id is None else (event_id, Frame(command("agent.speak_end", event_id), 0))

    def reset(self) -> None:
        self.utterance_id, self._carry = None, b""


class HeldFrames:
    """Frames waiting for the service's "connected", in order, bounded by the audio they hold."""

    def __init__(self, max_audio_s: float) -> None:
        self._limit = int(max_audio_s * BYTES_PER_SECOND)
        self._frames: deque[Frame] = deque()
        self.audio_bytes = 0

    def __bool__(self) -> bool:
        return bool(self._frames)

    def add(self, frames: list[Frame]) -> None:
        added = sum(f.audio_bytes for f in frames)
        if self.audio_bytes + added > self._limit:
            raise LiveAvatarStateError(
                f"realtime: the service is not connected and {self.audio_bytes / BYTES_PER_SECOND:.1f} s"
                " of audio is already held"
            )
        self._frames.extend(frames)
        self.audio_bytes += added

    def pop(self) -> Frame:
        frame = self._frames.popleft()
        self.audio_bytes -= frame.audio_bytes
        return frame

    def clear(self) -> None:
        self._frames.clear()
        self.audio_bytes = 0
