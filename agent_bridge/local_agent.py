"""A DEMO agent that runs offline, with no network and no model.

It exists so the whole voice loop can be tried and tested on one machine: it greets, tells the
server's local time and date, repeats things back, and otherwise says honestly what it is. The
real agent is the Vertex AI Agent Engine one; this is only the offline stand-in.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

from agent_bridge.interfaces import Agent, Conversation, ReplyDraft

Clock = Callable[[], datetime]

CAPABILITIES = "I'm the offline demo agent, so I can only tell the time and date, greet you, and repeat things back."

_REPEAT = re.compile(
    r"^(?:(?:can|could|would|will) you\s+)?(?:please\s+)?(?:repeat after me|repeat|say\b(?!\s*,))[\s,:;.\-]*(?P<rest>.+)$",
    re.IGNORECASE | re.DOTALL,
)
_SAY_AGAIN = re.compile(r"\b(?:say that again|repeat that|come again|what did you (?:just )?say)\b")
_WHAT_DID_I_SAY = re.compile(r"\bwhat did i (?:just )?say\b")
_TIME = re.compile(r"\b(?:what time|the time|time is it|current time|what's the time)\b")
_DATE = re.compile(r"\b(?:date|what day|which day|day is it|day is today|what's today|today's date)\b")
_GREETING = re.compile(r"^(?:hello|hi|hey|hiya|howdy|greetings|good (?:morning|afternoon|evening))\b")
_THANKS = re.compile(r"\b(?:thanks|thank you|cheers)\b")
_GOODBYE = re.compile(r"\b(?:bye|goodbye|good bye|see you|farewell|good night)\b")


def _plain(text: str) -> str:
    """Lowercase words and apostrophes only, for matching what Whisper wrote."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def format_time(now: datetime) -> str:
    hour = now.hour % 12 or 12
    return f"It's {hour}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}."


def format_date(now: datetime) -> str:
    return f"Today is {now:%A}, {now:%B} {now.day}, {now.year}."


@dataclass(frozen=True)
class Turn:
    user: str
    agent: str


class LocalConversation(Conversation):
    """One call's chat with the demo agent; `history` holds every finished turn."""

    def __init__(self, session_id: str, user_id: str, clock: Clock) -> None:
        self.session_id = session_id
        self.user_id = user_id
        self.history: list[Turn] = []
        self.tokens = 0  # words in and out so far, a rough stand-in for an LLM's token count
        self._clock = clock
        self._closed = False

    async def reply(self, text: str) -> AsyncIterator[str]:
        if self._closed:
            raise RuntimeError("conversation is closed")
        answer = self.answer(text)
        self.tokens += len(text.split())  # the prompt, as a model reads it before answering
        self.history.append(Turn(user=text, agent=answer))
        # Word by word, as a streaming model would send it; no delays, the pipeline paces speech.
        # Each delta is counted as it goes out, so a reply cut short costs only what was sent.
        for delta in _words(answer):
            self.tokens += len(delta.split())
            yield delta

    def speculate(self, text: str) -> LocalDraft | None:
        if self._closed:
            return None
        return LocalDraft(self, text, self.answer(text))

    def answer(self, text: str) -> str:
        """The whole reply to one user turn."""
        spoken = text.strip()
        plain = _plain(spoken)
        if not plain:
            return "Sorry, I didn't catch that."
        repeat = _REPEAT.match(spoken)
        if repeat and not _SAY_AGAIN.search(plain):
            return _as_sentence(repeat.group("rest"))
        if _WHAT_DID_I_SAY.search(plain):
            if self.history:
                return f"You said: '{self.history[-1].user}'."
            return "You haven't said anything before that."
        if _SAY_AGAIN.search(plain):
            return self.history[-1].agent if self.history else "I haven't said anything yet."
        wants_time, wants_date = bool(_TIME.search(plain)), bool(_DATE.search(plain))
        if wants_time or wants_date:
            now = self._clock()
            parts = ([format_time(now)] if wants_time else []) + ([format_date(now)] if wants_date else [])
            return " ".join(parts)
        if _GREETING.search(plain):
            return "Hello! " + CAPABILITIES + " Try asking me what time it is."
        if _GOODBYE.search(plain):
            return "Goodbye! Thanks for trying the demo."
        if _THANKS.search(plain):
            return "You're welcome!"
        return f"I heard you say: '{spoken}'. {CAPABILITIES}"

    async def aclose(self) -> None:
        self._closed = True


class LocalDraft(ReplyDraft):
    """The demo agent's answer worked out ahead; committing it counts it exactly as `reply` would."""

    def __init__(self, conversation: LocalConversation, text: str, answer: str) -> None:
        self._conversation = conversation
        self._text = text
        self._answer = answer
        self._committed = False

    async def deltas(self) -> AsyncIterator[str]:
        for delta in _words(self._answer):
            yield delta

    def commit(self) -> None:
        if self._committed:
            return
        self._committed = True
        conversation = self._conversation
        conversation.tokens += len(self._text.split()) + len(self._answer.split())
        conversation.history.append(Turn(user=self._text, agent=self._answer))


def _words(answer: str) -> list[str]:
    return re.findall(r"\S+\s*", answer)


class LocalAgent(Agent):
    """The offline demo agent; `clock` gives the server's local time (replaceable in tests)."""

    name = "local"

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or (lambda: datetime.now().astimezone())

    def open_conversation(self, session_id: str, user_id: str) -> LocalConversation:
        return LocalConversation(session_id, user_id, self._clock)


def _as_sentence(text: str) -> str:
    text = text.strip().strip("\"'\u201c\u201d").strip()
    if text and text[-1] not in ".!?":
        text += "."
    return text[:1].upper() + text[1:]
