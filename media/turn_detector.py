"""Turn-taking from voice activity: when the caller starts, pauses, resumes and finishes speaking.

A pure state machine on the audio media clock, so it is deterministic, testable and needs no timers:
time only advances as audio arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class TurnEventType(StrEnum):
    SPEECH_STARTED = "speech_started"  # min_speech_ms of speech: a turn has begun (barge-in cue)
    SPEECH_PAUSED = "speech_paused"  # first silence after speech: STT may start a speculative pass
    SPEECH_RESUMED = "speech_resumed"  # speech again before the turn ended: discard that pass
    TURN_ENDED = "turn_ended"  # end_of_turn_silence_ms of silence (the caller is done), or max_turn_ms


class TurnState(Enum):
    IDLE = "idle"  # no turn
    PENDING = "pending"  # speech seen, not yet long enough to count
    SPEAKING = "speaking"
    PAUSED = "paused"  # in a turn, silent since speech_end_ms
    CUT = "cut"  # a turn was cut at max_turn_ms: the next voiced window starts the next one at once


@dataclass(frozen=True, slots=True)
class TurnEvent:
    type: TurnEventType
    at_ms: float  # media clock when decided: the end of the window that triggered it
    speech_start_ms: float  # media clock of the turn's first voiced sample
    speech_end_ms: float  # media clock just after the last voiced sample so far (true end of speech)
    # TURN_ENDED: cut at max_turn_ms, not ended by silence: more of the utterance may follow, and a
    # TURN_ENDED without `cut` (after end_of_turn_silence_ms, as ever) closes it.
    # SPEECH_STARTED: the turn that picks up where a cut one ended; its speech_start_ms is the cut.
    cut: bool = False


@dataclass(frozen=True, slots=True)
class TurnConfig:
    start_threshold: float = 0.5  # probability that starts (or resumes) speech
    continue_threshold: float = 0.35  # lower bar to stay in speech, so wobbles don't split words
    min_speech_ms: float = 100.0  # voiced time before a turn counts; rounds up to whole windows
    end_of_turn_silence_ms: float = 500.0
    max_turn_ms: float = 30_000.0  # a turn is cut after this much of it (0 = never)
    # More silence given to a turn whose words sound unfinished (media.turn_completion) before it is answered.
    unfinished_hold_ms: float = 700.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.continue_threshold <= self.start_threshold <= 1.0:
            raise ValueError("need 0 <= continue_threshold <= start_threshold <= 1")
        if self.min_speech_ms < 0 or self.end_of_turn_silence_ms <= 0:
            raise ValueError("min_speech_ms must be >= 0 and end_of_turn_silence_ms > 0")
        if self.unfinished_hold_ms < 0:
            raise ValueError("unfinished_hold_ms must be >= 0")
        if self.max_turn_ms < 0:
            raise ValueError("max_turn_ms must be >= 0 (0 = turns are never cut)")


_NO_EVENTS: tuple[TurnEvent, ...] = ()


class TurnDetector:
    """Feed one VAD window (or one frame's speech flag) at a time; get the events it causes.

    `clock_ms` is the media-clock time at the END of the window; when omitted the detector advances
    its own clock by the window's duration, starting from `start_ms`.

    A turn lasts at most `max_turn_ms` from its first voiced sample, so whatever buffers a turn's
    audio stays bounded: it ends there (a `cut` TURN_ENDED), and if the caller is still speaking the
    next voiced window starts the next turn, with no min_speech_ms to wait for and no audio between
    the two. If the caller does not go on, end_of_turn_silence_ms after their last voiced sample a
    TURN_ENDED without `cut` closes the utterance as usual.
    """

    def __init__(self, config: TurnConfig | None = None, start_ms: float = 0.0) -> None:
        self.config = config if config is not None else TurnConfig()
        self.state = TurnState.IDLE
        self.clock_ms = start_ms
        self._speech_ms = 0.0  # voiced time inside confirmed turns
        self._candidate_ms = 0.0  # voiced time of a PENDING start
        self._start_ms = 0.0
        self._end_ms = 0.0

    @property
    def speech_ms(self) -> int:
        """Total voiced time of all turns so far, in whole ms (for metering)."""
        return round(self._speech_ms)

    @property
    def in_turn(self) -> bool:
        return self.state in (TurnState.SPEAKING, TurnState.PAUSED)

    @property
    def turn_open(self) -> bool:
        """In a turn, or between the parts of an utterance that a cut split (finish() ends it)."""
        return self.in_turn or self.state is TurnState.CUT

    def push_probability(
        self, probability: float, duration_ms: float, clock_ms: float | None = None
    ) -> tuple[TurnEvent, ...]:
        """One VAD window: hysteresis decides whether it is voiced given the current state."""
        if self.state in (TurnState.PENDING, TurnState.SPEAKING, TurnState.CUT):
            voiced = probability >= self.config.continue_threshold
        else:
            voiced = probability >= self.config.start_threshold
        return self.push_flag(voiced, duration_ms, clock_ms)

    def push_flag(self, voiced: bool, duration_ms: float, clock_ms: float | None = None) -> tuple[TurnEvent, ...]:
        """One window or frame already classified as speech or not."""
        if duration_ms <= 0:
            raise ValueError("duration_ms must be positive")
        now = self.clock_ms + duration_ms if clock_ms is None else clock_ms
        self.clock_ms = now
        state = self.state

        if voiced:
            if state is TurnState.CUT:
                # The caller spoke on through the cut: the next turn started where the last one ended.
                self.state = TurnState.SPEAKING
                self._speech_ms += duration_ms
                self._end_ms = now
                return (self._event(TurnEventType.SPEECH_STARTED, cut=True), *self._cut_if_too_long(speaking=True))
            if state is TurnState.IDLE:
                self.state = TurnState.PENDING
                self._start_ms = now - duration_ms
                self._candidate_ms = 0.0
                state = TurnState.PENDING
            if state is TurnState.PENDING:
                self._candidate_ms += duration_ms
                self._end_ms = now
                if self._candidate_ms < self.config.min_speech_ms:
                    return _NO_EVENTS
                self.state = TurnState.SPEAKING
                self._speech_ms += self._candidate_ms
                return (self._event(TurnEventType.SPEECH_STARTED), *self._cut_if_too_long(speaking=True))
            self._speech_ms += duration_ms
            self._end_ms = now
            events: tuple[TurnEvent, ...] = _NO_EVENTS
            if state is TurnState.PAUSED:
                self.state = TurnState.SPEAKING
                events = (self._event(TurnEventType.SPEECH_RESUMED),)
            return events + self._cut_if_too_long(speaking=True)

        if state is TurnState.IDLE:
            return _NO_EVENTS
        if state is TurnState.PENDING:
            # Too short to be a turn (click, cough, noise burst): forget it.
            self.state = TurnState.IDLE
            return _NO_EVENTS
        events = _NO_EVENTS
        if state is TurnState.SPEAKING:
            self.state = TurnState.PAUSED
            events = (self._event(TurnEventType.SPEECH_PAUSED),)
        # Silence is measured on the media clock, so a gap in the audio counts as silence too.
        # After a cut it still runs from the last voiced sample: the caller may have stopped right there.
        if now - self._end_ms >= self.config.end_of_turn_silence_ms:
            self.state = TurnState.IDLE
            return (*events, self._event(TurnEventType.TURN_ENDED))
        if state is TurnState.CUT:
            return events
        return events + self._cut_if_too_long(speaking=False)

    def _cut_if_too_long(self, speaking: bool) -> tuple[TurnEvent, ...]:
        """End a turn that has lasted max_turn_ms; the next starts at the cut if the caller goes on."""
        limit = self.config.max_turn_ms
        if not limit or self.clock_ms - self._start_ms < limit:
            return _NO_EVENTS
        ended = self._event(TurnEventType.TURN_ENDED, cut=True)
        self.state = TurnState.CUT
        self._start_ms = self.clock_ms
        if speaking:
            self._end_ms = self.clock_ms
        return (ended,)

    def finish(self, clock_ms: float | None = None) -> tuple[TurnEvent, ...]:
        """End any open turn now (the call or the stream ended); a PENDING start is dropped."""
        if clock_ms is not None:
            self.clock_ms = clock_ms
        was_in_turn = self.turn_open
        self.state = TurnState.IDLE
        if not was_in_turn:
            return _NO_EVENTS
        return (self._event(TurnEventType.TURN_ENDED),)

    def _event(self, kind: TurnEventType, cut: bool = False) -> TurnEvent:
        return TurnEvent(kind, self.clock_ms, self._start_ms, self._end_ms, cut)
