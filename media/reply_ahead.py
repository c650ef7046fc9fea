"""A reply made during the user's pause, ready the moment the turn ends.

At a pause the STT engine transcribes the turn so far. If the agent can draft a reply without effect
(ReplyDraft) and thrown-away speech costs nothing (a local TTS), the reply is written and synthesised
now, into a GatedSpeech: unheard, its events held. If the turn then ends with exactly that transcript,
the pipeline adopts it: the draft is committed, the held events go out and the gate opens, so the
first audio leaves within the frame instead of after a TTS pass. If the user speaks on, or the turn's
final transcript differs, it is discarded and nothing of it was ever seen, heard or counted.

States: preparing -> adopted | discarded (checked: a reply is adopted or discarded once).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from agent_bridge.interfaces import ReplyDraft, TextToSpeech
from media.events import EventBus
from media.gated_speech import GatedSpeech
from media.reply_speaker import ReplySpeaker
from media.speech_output import SpeechOutput
from media.turn_metrics import TurnTimer


class HeldEvents(EventBus):
    """Events of a reply not yet certain: kept, then published in order when it is adopted."""

    def __init__(self) -> None:
        super().__init__()
        self._held: list[tuple[str, dict[str, Any]]] | None = []
        self._target: EventBus | None = None

    def publish(self, event_type: str, **data: Any) -> None:
        if self._target is not None:
            self._target.publish(event_type, **data)
        elif self._held is not None:
            self._held.append((event_type, data))

    def release_to(self, target: EventBus) -> None:
        held, self._held = self._held or [], None
        self._target = target
        for event_type, data in held:
            target.publish(event_type, **data)

    def drop(self) -> None:
        self._held = None


class ReplyAhead:
    """One drafted reply to `text`; see the module's doc for its life."""

    def __init__(self, text: str, draft: ReplyDraft, tts: TextToSpeech, output: SpeechOutput) -> None:
        self.text = text
        self.state = "preparing"
        self.timer = TurnTimer(end_of_speech=None)
        self.failed = False  # an engine failed while drafting: the turn is answered the usual way
        self._draft = draft
        self._gate = GatedSpeech(output)
        self._events = HeldEvents()
        self._on_first_frame: Callable[[], None] | None = None
        self.speaker = ReplySpeaker(tts, self._gate, self._events, self.timer, self._first_frame, self._failed)
        self._task: asyncio.Task[str] = asyncio.ensure_future(self._speak())

    async def _speak(self) -> str:
        async with contextlib.aclosing(self._draft.deltas()) as deltas:
            return await self.speaker.speak(deltas)

    def usable_for(self, text: str) -> bool:
        return self.state == "preparing" and not self.failed and text == self.text

    async def adopt(self, turn: TurnTimer, events: EventBus, on_first_frame: Callable[[], None]) -> str:
        """Make it the reply to the turn timed by `turn`: heard from now on; returns its text once all
        of it is queued. Its own timer (self.timer) takes the turn's end and transcript moments."""
        if self.state != "preparing":
            raise RuntimeError(f"a {self.state} reply cannot be adopted")
        self.state = "adopted"
        self.timer.end_of_speech = turn.end_of_speech
        self.timer.transcript_ready = turn.transcript_ready
        self._on_first_frame = on_first_frame
        self._draft.commit()
        self._events.release_to(events)
        self._gate.open()
        return await self._task  # cancelling the caller (a barge-in) cancels the speaking too

    def discard(self) -> None:
        """Drop it unheard; idempotent, and a no-op once adopted (barge-in stops an adopted reply)."""
        if self.state != "preparing":
            return
        self.state = "discarded"
        self._gate.discard()
        self._events.drop()
        self._task.cancel()

    def _first_frame(self) -> None:
        if self._on_first_frame is not None:
            self._on_first_frame()

    def _failed(self, _code: str, _exc: BaseException) -> None:
        self.failed = True
