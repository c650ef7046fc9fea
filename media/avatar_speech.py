"""Our speech, spoken by the LiveAvatar: TTS audio goes to the avatar, its relayed audio is what the browser hears.

Positions and callbacks follow what was actually heard: an utterance's first position is reached
when the relayed audio first carries sound after we began speaking, later ones as that audio
plays on; it is drained once we said all of it and the relay has played it out (or the avatar
says it finished). A barge-in interrupts the avatar and drops the relayed audio within the frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from media.audio_resample import OutboundResampler
from media.outbound_audio import FRAME_MS, PacedAudioTrack
from media.relay_audio import RelayAudioBuffer

AVATAR_RATE = 24_000  # LiveAvatar takes PCM16 mono at 24 kHz
# Relayed silence that ends an utterance once all of it was heard, and the wait that ends one anyway.
_SILENCE_TO_DRAIN_MS = 200
_GIVE_UP_SILENCE_MS = 2_000


class AvatarVoice(Protocol):
    """The avatar session's speaking side; calls return at once and are sent in order."""

    def speak(self, pcm24k: bytes) -> None: ...
    def speak_end(self) -> None: ...
    def interrupt(self) -> None: ...


class AvatarSpeech:
    def __init__(self, voice: AvatarVoice, relay: RelayAudioBuffer, audio_out: PacedAudioTrack) -> None:
        self._voice = voice
        self._relay = relay
        self._audio_out = audio_out
        self._resampler = OutboundResampler(48_000, AVATAR_RATE)
        self._pushed = 0  # 48 kHz samples ever pushed (positions)
        self._start = 0  # position of the current utterance's first sample
        self._active = False
        self._said_all = False  # end_of_reply came for the current utterance
        self._heard: int | None = None  # samples of it heard since its first sound
        self._silent_ms = 0
        self._marks: list[tuple[int, Callable[[], None]]] = []
        self._drained: list[Callable[[], None]] = []
        relay.listener = self._on_relayed_frame

    # -- the SpeechOutput side ---------------------------------------------------------------

    def push(self, samples: np.ndarray) -> int:
        if not self._active:
            self._active, self._said_all, self._heard, self._silent_ms = True, False, None, 0
            self._start = self._pushed
        position = self._pushed
        self._pushed += samples.size
        pcm = self._resampler.resample(samples)
        if pcm.size:
            self._voice.speak(pcm.tobytes())
        return position

    def when_sent(self, position: int, callback: Callable[[], None]) -> None:
        if not self._active or position < self._start or self._reached(position):
            callback()
            return
        self._marks.append((position, callback))

    def when_drained(self, callback: Callable[[], None]) -> None:
        if not self._active:
            callback()
            return
        self._drained.append(callback)

    def end_of_reply(self) -> None:
        if not self._active:
            return
        tail = self._resampler.flush()
        if tail.size:
            self._voice.speak(tail.tobytes())
        self._voice.speak_end()
        self._said_all = True

    def flush(self) -> int:
        if not self._active:
            return self._relay.clear()
        self._voice.interrupt()
        self._relay.clear()
        heard = self._heard or 0
        dropped = max(0, self._pushed - self._start - heard)
        self._resampler.reset()
        self._finish(fire=False)
        return dropped

    @property
    def queued_samples(self) -> int:
        if not self._active:
            return 0
        return max(1, self._pushed - self._start - (self._heard or 0))

    # -- what the avatar and the relay tell us -----------------------------------------------

    def avatar_finished(self) -> None:
        """The avatar says the utterance ended (agent.speak_ended)."""
        if self._active and self._said_all:
            self._finish(fire=True)

    def detach(self) -> None:
        """The relay is gone: whatever waits is released, nothing more is heard."""
        self._relay.listener = None
        self._resampler.close()
        self._finish(fire=True)

    def _on_relayed_frame(self, real: int, sound: bool) -> None:
        if not self._active:
            return
        if self._heard is None:
            if not sound:
                self._count_silence(real)
                return
            self._heard = 0
            self._audio_out.relay_speaking = True
        self._heard += real
        if sound:
            self._silent_ms = 0
        else:
            self._count_silence(real)
        due = [mark for mark in self._marks if self._reached(mark[0])]
        if due:
            self._marks = [mark for mark in self._marks if not self._reached(mark[0])]
            for _, callback in due:
                callback()

    def _count_silence(self, real: int) -> None:
        self._silent_ms += FRAME_MS
        if not self._said_all:
            return
        heard_all = self._heard is not None and self._heard >= self._pushed - self._start
        if (heard_all and self._silent_ms >= _SILENCE_TO_DRAIN_MS) or self._silent_ms >= _GIVE_UP_SILENCE_MS:
            self._finish(fire=True)

    def _reached(self, position: int) -> bool:
        return self._heard is not None and self._heard >= position - self._start

    def _finish(self, *, fire: bool) -> None:
        marks, drained = self._marks, self._drained
        self._marks, self._drained = [], []
        self._active = False
        self._audio_out.relay_speaking = False
        if fire:
            for _, callback in marks:
                callback()
            for callback in drained:
                callback()
