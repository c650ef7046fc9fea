"""The one place engines are chosen: an engine name in EngineConfig maps to a factory here.

Factories import their engine module only when chosen, so a deployment pays only for the
engines it uses. A cloud engine ("google", "vertex") plugs in as one more table entry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from agent_bridge.config import EngineConfig
from agent_bridge.interfaces import Agent, AvatarChoice, SpeechToText, TextToSpeech

if TYPE_CHECKING:
    from agent_bridge.liveavatar.engine import LiveAvatarEngine
    from agent_bridge.rendered_avatar import RenderedAvatar


def _whisper(config: EngineConfig) -> SpeechToText:
    from agent_bridge.whisper_stt import WhisperSpeechToText

    return WhisperSpeechToText(cpu_threads=config.whisper_cpu_threads, final_workers=config.whisper_workers)


def _google_stt(config: EngineConfig) -> SpeechToText:
    from agent_bridge.google_stt import GoogleSpeechToText
    from agent_bridge.google_stt_settings import GoogleSpeechSettings

    return GoogleSpeechToText(GoogleSpeechSettings.from_config(config))


def _piper(config: EngineConfig) -> TextToSpeech:
    from agent_bridge.piper_tts import PiperTextToSpeech

    return PiperTextToSpeech(
        config.piper_model_path, config.piper_config_path, cpu_threads=config.piper_cpu_threads, workers=config.piper_workers
    )


def _google_tts(config: EngineConfig) -> TextToSpeech:
    from agent_bridge.google_tts import GoogleTextToSpeech

    return GoogleTextToSpeech(
        config.google_tts_voice,
        config.google_tts_language,
        config.google_tts_endpoint,
        insecure=config.google_api_insecure,
        voices=config.google_tts_voices,
    )


def _local(config: EngineConfig) -> Agent:
    from agent_bridge.local_agent import LocalAgent

    return LocalAgent()


def _vertex(config: EngineConfig) -> Agent:
    from agent_bridge.vertex_agent import VertexAgent

    return VertexAgent.from_config(config)


STT_ENGINES: Mapping[str, Callable[[EngineConfig], SpeechToText]] = {"whisper": _whisper, "google": _google_stt}
TTS_ENGINES: Mapping[str, Callable[[EngineConfig], TextToSpeech]] = {"piper": _piper, "google": _google_tts}
AGENT_ENGINES: Mapping[str, Callable[[EngineConfig], Agent]] = {"local": _local, "vertex": _vertex}


@dataclass
class Engines:
    """The process-wide engines every call shares."""

    stt: SpeechToText
    agent: Agent
    tts: TextToSpeech
    # ENGINE_FALLBACK=offline: the offline engine of each kind whose configured engine is a cloud one.
    fallback: dict[str, SpeechToText | Agent | TextToSpeech] = field(default_factory=dict)

    def _all(self) -> list[SpeechToText | Agent | TextToSpeech]:
        return [self.stt, self.agent, self.tts, *self.fallback.values()]

    async def warm_up(self) -> None:
        """Load models before the first call, for the engines that have something to load."""
        warmers = [getattr(engine, "warm_up", None) for engine in self._all()]
        await asyncio.gather(*(warm() for warm in warmers if warm is not None))

    async def aclose(self) -> None:
        results = await asyncio.gather(*(engine.aclose() for engine in self._all()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


E = TypeVar("E")


def _choose(
    kind: str, setting: str, name: str, table: Mapping[str, Callable[[EngineConfig], E]]
) -> Callable[[EngineConfig], E]:
    factory = table.get(name)
    if factory is None:
        allowed = ", ".join(sorted(table))
        raise ValueError(f"unknown {kind} engine {name!r} ({setting}); choose one of: {allowed}")
    return factory


def build_engines(config: EngineConfig) -> Engines:
    """Build the configured engines; a ValueError names any unknown engine and the allowed ones."""
    # Check every name before building anything, so a typo fails fast and loads no model.
    make_stt = _choose("speech-to-text", "STT_ENGINE", config.stt_engine, STT_ENGINES)
    make_agent = _choose("agent", "AGENT_ENGINE", config.agent_engine, AGENT_ENGINES)
    make_tts = _choose("text-to-speech", "TTS_ENGINE", config.tts_engine, TTS_ENGINES)
    engines = Engines(stt=make_stt(config), agent=make_agent(config), tts=make_tts(config))
    if config.engine_fallback == "offline":
        offline = {"stt": ("whisper", _whisper), "agent": ("local", _local), "tts": ("piper", _piper)}
        chosen = {"stt": config.stt_engine, "agent": config.agent_engine, "tts": config.tts_engine}
        engines.fallback = {kind: make(config) for kind, (name, make) in offline.items() if chosen[kind] != name}
    return engines


AVATAR_ENGINES = ("rendered", "liveavatar", "none")


@dataclass
class AvatarEngines:
    """The node's avatars: the rendered face (the offline default and the fallback) and the LiveAvatar."""

    renderer: RenderedAvatar | None
    liveavatar: LiveAvatarEngine | None = None
    fallback: str = "rendered"

    @property
    def engine(self) -> str:
        """The engine whose avatars sessions choose from: liveavatar, rendered or none."""
        if self.liveavatar is not None:
            return "liveavatar"
        return "rendered" if self.renderer is not None else "none"

    def avatars(self) -> list[AvatarChoice]:
        """What a session's avatar_id may name, the default first."""
        if self.liveavatar is not None:
            return self.liveavatar.avatars()
        return self.renderer.avatars() if self.renderer is not None else []

    async def aclose(self) -> None:
        if self.liveavatar is not None:
            await self.liveavatar.aclose()


def build_avatar(config: EngineConfig) -> AvatarEngines:
    """What every call that asks for video gets: one renderer shared by all calls, the LiveAvatar, or none."""
    if config.avatar_engine == "none":
        return AvatarEngines(renderer=None, fallback="none")
    if config.avatar_engine not in AVATAR_ENGINES:
        raise ValueError(
            f"unknown avatar engine {config.avatar_engine!r} (AVATAR_ENGINE); choose one of: {', '.join(AVATAR_ENGINES)}"
        )
    from agent_bridge.rendered_avatar import RenderedAvatar

    if config.avatar_engine == "rendered":
        return AvatarEngines(renderer=RenderedAvatar())
    from agent_bridge.liveavatar.engine import LiveAvatarEngine

    if config.liveavatar is None:
        raise ValueError("AVATAR_ENGINE=liveavatar needs LIVEAVATAR_API_KEY")
    # The rendered face is built either way: it is the placeholder until the avatar's first frame.
    return AvatarEngines(RenderedAvatar(), LiveAvatarEngine(config.liveavatar), config.avatar_fallback)
