"""The engines one call uses now, and its switch to the offline ones when a cloud engine fails for good.

With ENGINE_FALLBACK=offline the process holds an offline engine beside each cloud one; an error
event that says a kind's engine gave up (after its own retries) moves this call to the offline
engine of that kind, once. What the old engine metered stays counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Protocol

from agent_bridge.interfaces import Agent, Conversation, InterimCallback, SpeechToText, SpeechToTextSession, TextToSpeech
from agent_bridge.registry import Engines

class SessionVoiceStore(Protocol):
    async def voice_of(self, session_id: uuid.UUID) -> str | None: ...


# The error codes the pipeline publishes, by the engine kind that failed.
KIND_OF_ERROR = {"stt_failed": "stt", "tts_failed": "tts", "agent_failed": "agent"}


class CallEngines:
    def __init__(self, engines: Engines, session_id: str, user_id: str, on_interim: InterimCallback) -> None:
        self._fallback = engines.fallback
        self._session_id = session_id
        self._user_id = user_id
        self._on_interim = on_interim
        self.stt: SpeechToTextSession = engines.stt.open_session(on_interim)
        self.tts: TextToSpeech = engines.tts
        self.conversation: Conversation = engines.agent.open_conversation(session_id, user_id)
        self._switched: set[str] = set()
        self._stt_ms_before = 0  # transcribed by sessions this call no longer uses
        self._tokens_before = 0
        self._retired: list[asyncio.Task[None]] = []

    @property
    def stt_ms(self) -> int:
        return self._stt_ms_before + self.stt.audio_ms_transcribed

    @property
    def agent_tokens(self) -> int:
        return self._tokens_before + self.conversation.tokens

    def use_voice(self, voice_id: str) -> bool:
        """Speak in `voice_id` from now on, if the call's TTS has it; an offline fallback keeps its own voice."""
        try:
            self.tts = self.tts.with_voice(voice_id)
        except ValueError:
            return False
        return True

    def fall_back(self, error_code: str) -> str | None:
        """Switch the failed kind to its offline engine (once); returns the engine's name, or None."""
        kind = KIND_OF_ERROR.get(error_code)
        if kind is None or kind in self._switched or kind not in self._fallback:
            return None
        self._switched.add(kind)
        engine = self._fallback[kind]
        if kind == "stt":
            assert isinstance(engine, SpeechToText)
            old_stt, self.stt = self.stt, engine.open_session(self._on_interim)
            self._stt_ms_before += old_stt.audio_ms_transcribed
            self._retire(old_stt.aclose())
        elif kind == "tts":
            assert isinstance(engine, TextToSpeech)
            self.tts = engine
        else:
            assert isinstance(engine, Agent)
            old_conversation, self.conversation = self.conversation, engine.open_conversation(self._session_id, self._user_id)
            self._tokens_before += old_conversation.tokens
            self._retire(old_conversation.aclose())
        return engine.name

    def _retire(self, closing) -> None:  # type: ignore[no-untyped-def]
        self._retired.append(asyncio.ensure_future(closing))

    async def aclose(self) -> None:
        await asyncio.gather(*self._retired, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.stt.aclose()
        with contextlib.suppress(Exception):
            await self.conversation.aclose()
