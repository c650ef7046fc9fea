"""The speaking side of one call: at most one reply at a time, spoken, counted, and stopped on demand.

A reply comes from the agent (a spoken or typed turn), is said word for word (the avatar's speak
endpoint), or was drafted during the user's pause (media.reply_ahead) and is adopted as it stands.
A new reply or the user's voice stops the one under way within the frame: unheard audio is dropped,
agent and TTS cancelled.
Each agent reply goes to the call's ConversationLog: written with its text, then as heard (or as far
as it was heard, when it was stopped). A reply can also be written and not spoken (a chat message
whose speech was not asked for).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from media.conversation_log import ConversationLog, LoggedMessage, ReplyRecord
from media.engine_fallback import CallEngines
from media.events import EventBus
from media.reply_ahead import ReplyAhead
from media.reply_speaker import OnEngineError, ReplySpeaker
from media.speech_output import SpeechOutput
from media.turn_metrics import TurnTimer


@dataclass(frozen=True)
class Answer:
    text: str  # "" if the reply was stopped before it was all queued
    message: LoggedMessage | None  # the reply's message (None for a scripted one, which is not logged)


class BotReplies:
    def __init__(
        self,
        engines: CallEngines,
        speech: SpeechOutput,
        events: EventBus,
        on_error: OnEngineError,
        on_barge_in: Callable[[], None],
        log: ConversationLog | None = None,
    ) -> None:
        self._use = engines
        self._speech = speech
        self._events = events
        self._on_error = on_error
        self._on_barge_in = on_barge_in  # told when the user's voice stopped a reply
        self._task: asyncio.Task[str] | None = None
        self._tasks: set[asyncio.Task[str]] = set()
        self._speaking: set[ReplySpeaker] = set()  # replies still being spoken
        self._bot_speaking = False
        self._turns = 0
        self._tts_characters = 0  # of finished replies
        self._log = log
        self._record: ReplyRecord | None = None  # the newest reply's, until heard to its end or stopped

    @property
    def tts_characters(self) -> int:
        """Characters sent to TTS: a live reply's count as they go, so quota is checked within the reply."""
        return self._tts_characters + sum(s.characters_synthesized for s in self._speaking)

    @property
    def active(self) -> bool:
        """A reply is being written or spoken, or its speech is still queued."""
        running = self._task is not None and not self._task.done()
        return running or self._speech.queued_samples > 0

    async def reply(self, text: str, timer: TurnTimer, *, scripted: bool = False, ahead: ReplyAhead | None = None) -> str:
        """Answer `text` (or say it, `scripted`; or adopt `ahead`); returns the reply's text once all is queued,
        "" if the user interrupted it."""
        return (await self.answer(text, timer, scripted=scripted, ahead=ahead)).text

    async def answer(
        self, text: str, timer: TurnTimer, *, scripted: bool = False, ahead: ReplyAhead | None = None, speak: bool = True
    ) -> Answer:
        """`reply`, also saying which message records it; `speak=False` writes the reply without saying it."""
        if self.active:
            self.interrupt("new_turn")
        self._finish_record(interrupted=True)  # a reply still being heard is cut by this one
        record = self._log.agent_reply(speak) if self._log is not None and not scripted else None
        self._record = record
        self._turns += 1
        task = asyncio.ensure_future(self._run(text, timer, self._turns, scripted=scripted, ahead=ahead, record=record, speak=speak))
        self._task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        message = record.logged if record is not None else None
        try:
            return Answer(await asyncio.shield(task), message)
        except asyncio.CancelledError:
            if task.cancelled():
                return Answer("", message)  # interrupted by the user: what was said is gone
            raise
        except Exception:
            self._finish_record(interrupted=True, only=record)
            raise

    def _finish_record(self, *, interrupted: bool, only: ReplyRecord | None = None) -> None:
        """The newest reply is heard to its end or stopped (`only`: if it is still that one)."""
        record = self._record
        if record is not None and (only is None or only is record):
            self._record = None
            record.finish(interrupted=interrupted)

    def interrupt(self, reason: str) -> None:
        """Stop the bot at once: unsent audio is dropped within the frame, agent and TTS cancelled."""
        dropped = self._speech.flush()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if reason == "barge_in":
            self._on_barge_in()
        self._finish_record(interrupted=True)
        self.set_speaking(False)
        self._events.publish("interrupted", reason=reason, dropped_ms=dropped * 1000 // 48_000)

    def set_speaking(self, speaking: bool) -> None:
        if speaking != self._bot_speaking:
            self._bot_speaking = speaking
            self._events.publish("bot_speaking", speaking=speaking)

    async def aclose(self) -> None:
        self._finish_record(interrupted=True)  # the call ends with the reply unheard (if one is under way)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(
        self, text: str, timer: TurnTimer, turn: int, *,
        scripted: bool, ahead: ReplyAhead | None, record: ReplyRecord | None, speak: bool,
    ) -> str:  # fmt: skip
        if not speak:
            return await self._write_only(text, record)
        loop = asyncio.get_running_loop()
        asked = timer
        if ahead is not None:
            timer = ahead.timer  # its TTS was asked for before the turn ended: its stages say so

        def first_frame_sent() -> None:
            timer.first_frame_sent = loop.time()
            self.set_speaking(True)
            self._events.publish("turn_metrics", turn=turn, drafted=ahead is not None, **timer.as_event())

        if ahead is not None:
            speaker = ahead.speaker
        else:
            speaker = ReplySpeaker(self._use.tts, self._speech, self._events, timer, first_frame_sent, self._on_error)
        self._speaking.add(speaker)
        if record is not None:
            record.follow(speaker.progress)
        try:
            if ahead is not None:
                reply = await ahead.adopt(asked, self._events, first_frame_sent)
            else:
                # Closed at once when the reply is cancelled (barge-in), so a cloud agent's stream ends with it.
                source = _said_as_is(text) if scripted else self._use.conversation.reply(text)
                async with contextlib.aclosing(source) as deltas:
                    reply = await speaker.speak(deltas)
        finally:
            self._speaking.discard(speaker)
            self._tts_characters += speaker.characters_synthesized
        if record is not None:
            record.written()
        self._speech.end_of_reply()

        def drained() -> None:
            self.set_speaking(False)
            if record is not None:
                speaker.progress.all_heard()
                self._finish_record(interrupted=False, only=record)

        self._speech.when_drained(drained)
        return reply

    async def _write_only(self, text: str, record: ReplyRecord | None) -> str:
        """The agent's reply as text, not spoken: its events go out as for a spoken one."""
        parts: list[str] = []
        async with contextlib.aclosing(self._use.conversation.reply(text)) as deltas:
            try:
                async for delta in deltas:
                    if delta:
                        parts.append(delta)
                        self._events.publish("agent_text", delta=delta, final=False)
                        if record is not None:
                            record.text_so_far("".join(parts))
            except Exception as exc:  # what the agent said so far is kept, as when speaking
                self._on_error("agent_failed", exc)
        reply = "".join(parts).strip()
        self._events.publish("agent_text", text=reply, final=True)
        self._finish_record(interrupted=False, only=record)
        return reply


async def _said_as_is(text: str) -> AsyncIterator[str]:
    """A scripted reply: the text itself, as the agent's one delta."""
    yield text
