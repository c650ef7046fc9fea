"""The outbound audio track: one 20 ms, 48 kHz mono frame on time, every time."""

from __future__ import annotations

import time
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.audio_buffer import SampleQueue
from media.opus_encoder import SILENT_FRAME, TIME_BASE, InlineOpusEncoder
from media.pacing import FramePacer
from media.relay_audio import RelayAudioBuffer

SAMPLE_RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000

assert SILENT_FRAME.size == FRAME_SAMPLES


class PacedAudioTrack(MediaStreamTrack):
    """Plays whatever was queued, silence otherwise, paced by the event loop's monotonic clock.

    Timestamps advance by exactly one frame per frame, so the receiver's clock never drifts.
    It yields encoded Opus packets (see media.opus_encoder), which aiortc sends as they are. Normally
    nothing awaits `recv`: the call's sender takes `next_payload` from the shared frame clock
    (media.rtp_send_path); `recv` paces itself for a sender left to aiortc's own loop.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue = SampleQueue()
        # While the LiveAvatar relay is on, the browser hears the avatar's own audio from here
        # (in sync with its lips); our speech goes to the avatar instead of the queue.
        self.relay: RelayAudioBuffer | None = None
        self.relay_speaking = False  # the relayed audio is the avatar's speech: it counts as speech sent
        # Told of every frame's samples as it is sent (the avatar's mouth follows them).
        self.sent_listeners: list[Callable[[np.ndarray], None]] = []
        self._encoder: InlineOpusEncoder | None = InlineOpusEncoder()
        self.frames_sent = 0
        self.audio_samples_sent = 0  # samples of real (queued) audio among those sent
        self._pacer = FramePacer(FRAME_MS / 1000)
        self._last_frame_at: float | None = None
        self._max_gap_ms = 0.0

    def push(self, samples: np.ndarray) -> int:
        """Queue 48 kHz mono int16 samples; returns the position of the first (see `when_sent`)."""
        return self.queue.push(samples)

    def when_sent(self, position: int, callback: Callable[[], None]) -> None:
        self.queue.when_sent(position, callback)

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call back once everything queued so far has been sent (never, if it is flushed)."""
        self.queue.when_sent(self.queue.pushed_total - 1, callback)

    def flush(self) -> int:
        """Drop all unsent audio (barge-in); returns the samples dropped."""
        return self.queue.clear()

    @property
    def max_frame_gap_ms(self) -> float:
        """The longest wait between two frames handed to the sender since the last reset."""
        return self._max_gap_ms

    def reset_gap_stats(self) -> None:
        self._max_gap_ms = 0.0

    @property
    def queued_samples(self) -> int:
        return len(self.queue)

    def stop(self) -> None:
        """End the track and free its encoder at once (end of call), not at the next collection."""
        super().stop()
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        await self._pacer.wait_for(self.frames_sent)
        pts = self.frames_sent * FRAME_SAMPLES
        payload = self.next_payload()
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = TIME_BASE
        return packet

    def next_payload(self) -> bytes:
        """The next 20 ms frame as an Opus payload; its pts is `frames_sent * FRAME_SAMPLES` before the call."""
        encoder = self._encoder
        if self.readyState != "live" or encoder is None:
            raise MediaStreamError
        relay = self.relay
        if relay is not None:
            samples = relay.pop(FRAME_SAMPLES)
            real = FRAME_SAMPLES if self.relay_speaking else 0
        elif len(self.queue):
            samples, real = self.queue.pop(FRAME_SAMPLES)
        else:
            samples, real = SILENT_FRAME, 0  # what an empty queue pops, without making it
        payload = encoder.encode_payload(samples)
        for listener in self.sent_listeners:
            listener(samples)
        self.frames_sent += 1
        self.audio_samples_sent += real
        now = time.monotonic()
        if self._last_frame_at is not None:
            self._max_gap_ms = max(self._max_gap_ms, (now - self._last_frame_at) * 1000)
        self._last_frame_at = now
        return payload
