"""Where a reply's speech goes: the call's own audio track, or the avatar, whose relayed audio plays instead.

The voice loop speaks through a SpeechRouter and never needs to know which: positions, the
first-frame and drained callbacks, flushes on barge-in and the busy count mean the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from media.outbound_audio import PacedAudioTrack


class SpeechOutput(Protocol):
    def push(self, samples: np.ndarray) -> int:
        """Queue 48 kHz mono int16 speech; returns the position of its first sample."""

    def when_sent(self, position: int, callback: Callable[[], None]) -> None:
        """Call back once the sample at `position` has reached the browser's stream."""

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call back once everything pushed so far has been heard (never, if flushed first)."""

    def flush(self) -> int:
        """Drop unheard speech now (barge-in); returns the samples dropped."""

    @property
    def queued_samples(self) -> int:
        """Speech pushed but not heard yet."""

    def end_of_reply(self) -> None:
        """The reply's speech is all pushed."""


class TrackSpeech:
    """Speech straight onto the call's paced track."""

    def __init__(self, track: PacedAudioTrack) -> None:
        self._track = track

    def push(self, samples: np.ndarray) -> int:
        return self._track.push(samples)

    def when_sent(self, position: int, callback: Callable[[], None]) -> None:
        self._track.when_sent(position, callback)

    def when_drained(self, callback: Callable[[], None]) -> None:
        self._track.when_drained(callback)

    def flush(self) -> int:
        return self._track.flush()

    @property
    def queued_samples(self) -> int:
        return self._track.queued_samples

    def end_of_reply(self) -> None:
        """The track plays what it has; there is nothing to close."""


class SpeechRouter:
    """The call's speech output; `avatar` is set while the LiveAvatar relay carries the call's audio."""

    def __init__(self, track: PacedAudioTrack) -> None:
        self.track_speech = TrackSpeech(track)
        self.avatar: SpeechOutput | None = None

    @property
    def _target(self) -> SpeechOutput:
        return self.avatar if self.avatar is not None else self.track_speech

    def push(self, samples: np.ndarray) -> int:
        return self._target.push(samples)

    def when_sent(self, position: int, callback: Callable[[], None]) -> None:
        self._target.when_sent(position, callback)

    def when_drained(self, callback: Callable[[], None]) -> None:
        self._target.when_drained(callback)

    def flush(self) -> int:
        # Both: speech queued on the track before the avatar took over must stop too.
        dropped = self.track_speech.flush()
        if self.avatar is not None:
            dropped += self.avatar.flush()
        return dropped

    @property
    def queued_samples(self) -> int:
        busy = self.track_speech.queued_samples
        return busy + (self.avatar.queued_samples if self.avatar is not None else 0)

    def end_of_reply(self) -> None:
        self._target.end_of_reply()
