"""Telling the bot's own voice, coming back through the user's microphone, from the user talking over it.

Browsers cancel most echo, but what a canceller leaves (or a client without one) is the bot's speech
30-40 dB down, and Silero rightly calls it speech: the bot would interrupt itself. While the bot has
spoken in the last ECHO_SPAN_MS, inbound audio whose peak stays MARGIN_DB below the loudest of what
was sent in that span is taken for echo and cannot start a turn; someone actually talking over the
bot is far louder than that. With nothing sent lately the gate is wide open.
"""

from __future__ import annotations

import numpy as np

from media.opus_encoder import SILENT_FRAME

FRAME_MS = 20
ECHO_SPAN_MS = 600  # echo paths (device buffers, room) are well under this
MARGIN_DB = -20.0
_MARGIN = 10 ** (MARGIN_DB / 20)


class EchoGate:
    def __init__(self) -> None:
        # Per-frame peaks of the last ECHO_SPAN_MS sent, a ring; the loudest is kept, not searched for on
        # every inbound window (a silent bot's ring is all zeros and never changes).
        self._sent_peaks = [0] * (ECHO_SPAN_MS // FRAME_MS)
        self._next = 0
        self._loudest = 0
        self.frames_held_back = 0  # inbound frames taken for echo (for tests and logs)

    def on_sent(self, samples: np.ndarray) -> None:
        """Each outbound 20 ms frame as it is sent (a PacedAudioTrack sent-listener)."""
        peak = 0 if samples is SILENT_FRAME else _peak(samples)
        slot = self._next
        self._next = (slot + 1) % len(self._sent_peaks)
        dropped = self._sent_peaks[slot]
        if peak == dropped:
            return
        self._sent_peaks[slot] = peak
        if peak >= self._loudest:
            self._loudest = peak
        elif dropped == self._loudest:
            self._loudest = max(self._sent_peaks)

    def threshold(self) -> float:
        """The inbound peak below which audio is echo now (0 when the bot has been quiet)."""
        return self._loudest * _MARGIN

    def is_echo(self, inbound: np.ndarray) -> bool:
        """Whether this inbound audio (int16, any rate) is too quiet, next to the bot's voice, to be the user."""
        floor = self.threshold()
        if floor <= 0.0 or not inbound.size:
            return False
        echo = _peak(inbound) < floor
        self.frames_held_back += echo
        return echo


def _peak(samples: np.ndarray) -> int:
    """The largest magnitude, without np.abs (which wraps -32768 back onto itself in int16)."""
    if not samples.size:
        return 0
    return max(int(samples.max()), -int(samples.min()))
