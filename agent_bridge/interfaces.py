"""The small interfaces every engine implements, offline default and cloud alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Transcript:
    """A piece of recognised speech; times are in the audio clock of the session, in ms."""

    text: str
    final: bool
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Voice:
    """A voice a TextToSpeech engine can speak in; `voice_id` is what `with_voice` takes."""

    voice_id: str
    name: str
    language: str  # BCP 47, e.g. en-US


@dataclass(frozen=True)
class AvatarChoice:
    """An avatar an avatar engine can show; `avatar_id` is what a session's `avatar_id` names."""

    avatar_id: str
    name: str


class EngineError(Exception):
    """An engine failed; the call stays up and the browser gets an `error` event."""

    def __init__(self, engine: str, message: str) -> None:
        super().__init__(f"{engine}: {message}")
        self.engine = engine
        self.message = message


InterimCallback = Callable[[Transcript], None]


class SpeechToTextSession(ABC):
    """One call's recognition stream. Audio is 16 kHz mono signed 16-bit little-endian PCM."""

    @abstractmethod
    def push(self, pcm: bytes) -> None:
        """Append audio of the current turn. Cheap and non-blocking."""

    def speech_paused(self) -> None:
        """Voice activity stopped: an engine may start its final pass early (speculatively)."""

    def speech_resumed(self) -> None:
        """Voice activity came back before the turn ended: drop any speculative pass."""

    async def paused_transcript(self) -> str | None:
        """The turn so far as of the last speech_paused(), once the engine has it; None when it makes
        none, or speech resumed. What finish_turn() will say if the turn now ends without more speech."""
        return None

    @abstractmethod
    async def finish_turn(self) -> Transcript | None:
        """The final transcript of the audio pushed since the last turn, or None if nothing was said.

        The turn's audio is taken before the first await: audio pushed after the call belongs to
        the next turn (a turn cut at MAX_TURN_SECONDS goes on without a gap or an overlap).
        """

    @abstractmethod
    def reset(self) -> None:
        """Forget the audio of the current turn (e.g. a barge-in that was only noise)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the stream; further calls are errors."""

    @property
    def audio_ms_transcribed(self) -> int:
        """Audio billed by the engine so far, in ms (metered as stt_seconds)."""
        return 0


class SpeechToText(ABC):
    """A process-wide speech-to-text engine that opens one session per call."""

    name: str

    @abstractmethod
    def open_session(self, on_interim: InterimCallback) -> SpeechToTextSession: ...

    async def transcribe(self, pcm: bytes) -> str:
        """The text of a whole clip (16 kHz mono int16 PCM), "" if nothing was said: one turn of its own session.

        Engines with a cheaper one-shot pass override this (no interim passes, no stream)."""
        session = self.open_session(_no_interim)
        try:
            session.push(pcm)
            transcript = await session.finish_turn()
        finally:
            await session.aclose()
        return transcript.text if transcript is not None else ""

    async def aclose(self) -> None:
        """Release process-wide resources (models, channels)."""


def _no_interim(_: Transcript) -> None:
    pass


class ReplyDraft(ABC):
    """A reply written before its question is certain: nothing of it counts until `commit()`."""

    @abstractmethod
    def deltas(self) -> AsyncIterator[str]:
        """The reply's text deltas, as `Conversation.reply` would stream them."""

    @abstractmethod
    def commit(self) -> None:
        """The question was asked after all: record the turn as if `reply` had answered it."""


class Conversation(ABC):
    """One call's conversation with the agent, holding its context."""

    # Tokens in and out so far, where the engine reports them (metered as agent_tokens): a running
    # total, raised as the reply streams (the prompt's when it is read, each delta's as it is
    # yielded), never only once a reply ends, so the quota guard sees a long reply as it grows.
    tokens: int = 0

    async def start(self) -> str | None:
        """Begin the conversation on the agent's side (at call start); returns its session id, if it has one."""
        return None

    def resume(self, agent_session_id: str) -> None:
        """Continue an agent session made earlier (with the user session) instead of starting a new one."""

    @abstractmethod
    def reply(self, text: str) -> AsyncIterator[str]:
        """Stream the reply to a user turn as text deltas; closing the iterator ends the request."""

    def speculate(self, text: str) -> ReplyDraft | None:
        """A draft reply to `text` that has no effect unless committed, or None where the agent cannot
        answer without effect (a cloud agent records every request in its session)."""
        return None

    async def aclose(self) -> None:
        """End the conversation on the agent's side."""


class Agent(ABC):
    name: str

    @abstractmethod
    def open_conversation(self, session_id: str, user_id: str) -> Conversation: ...

    async def aclose(self) -> None:
        """Release process-wide resources."""


class TextToSpeech(ABC):
    """Synthesises text to mono signed 16-bit little-endian PCM at `sample_rate`."""

    name: str
    sample_rate: int
    # Whether speech synthesised and then thrown away costs nothing (a local engine): only then is a
    # reply spoken ahead, during the user's pause, before the turn is certain.
    discard_is_free: bool = False

    @abstractmethod
    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Stream the audio of `text` in chunks, the first as early as the engine can."""

    def voices(self) -> list[Voice]:
        """The voices this engine can speak in, its own (default) voice first."""
        return []

    def with_voice(self, voice_id: str) -> TextToSpeech:
        """This engine speaking in `voice_id` (one of voices()); ValueError for a voice it does not have.

        The variant shares the engine's process-wide resources and is never closed on its own."""
        if voice_id not in {voice.voice_id for voice in self.voices()}:
            raise ValueError(f"{self.name} has no voice {voice_id!r}")
        return self

    async def aclose(self) -> None:
        """Release process-wide resources."""
