"""Joining a user's utterance to the one before it when the user spoke on before hearing its answer.

A pause inside a sentence ("Hello, ... what time is it?") can be long enough to end the turn. If the
user speaks again before the answer to the first part has begun, that answer is dropped and its
transcripts join the next utterance; if the answer had just begun (within JOIN_WINDOW_S of the turn's
end) and the user barges in, its text is carried into the next question too. Either way the agent
answers the whole question once, not a fragment of it.
"""

from __future__ import annotations

import asyncio

from agent_bridge.interfaces import Transcript

# A barge-in this soon after the turn ended continues the question rather than answering the reply.
JOIN_WINDOW_S = 1.5

SaidTasks = list[asyncio.Task[Transcript | None]]


class UtteranceJoin:
    def __init__(self) -> None:
        self._answering: tuple[asyncio.Task[None], SaidTasks] | None = None
        self._replying: tuple[str, float] | None = None  # text of the reply under way, end of its turn
        self._carried: list[str] = []

    def answering(self, task: asyncio.Task[None], said: SaidTasks) -> None:
        """An utterance ended: `task` is answering it from the transcripts of `said`."""
        self._answering = (task, said)

    def speech_started(self) -> SaidTasks:
        """The user speaks again: an answer not yet under way is dropped; its transcripts are returned
        to be answered with what comes next."""
        if self._answering is None:
            return []
        task, said = self._answering
        self._answering = None
        if task.done():
            return []
        task.cancel()
        return said

    def reply_started(self, text: str, turn_ended_at: float | None) -> None:
        """The answer to `text` is under way (only spoken turns can be continued)."""
        self._answering = None
        self._replying = (text, turn_ended_at) if turn_ended_at is not None else None

    def reply_interrupted(self, now: float) -> None:
        """A barge-in stopped the reply: soon after the turn ended, the question goes on."""
        if self._replying is not None:
            text, turn_ended_at = self._replying
            if now - turn_ended_at <= JOIN_WINDOW_S:
                self._carried.append(text)
        self._replying = None

    @property
    def carried(self) -> list[str]:
        """The texts take_carried() would return, left in place."""
        return list(self._carried)

    def take_carried(self) -> list[str]:
        carried, self._carried = self._carried, []
        return carried
