"""Choosing what every call on this node does with its media, and loading what that needs once."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass

from agent_bridge.config import EngineConfig
from agent_bridge.registry import AvatarEngines, Engines, build_avatar, build_engines
from media import vad_batch
from media.agent_sessions import AgentSessionStore
from media.avatar_track import AvatarVideoTrack
from media.conversation_log import MessageStore
from media.engine_fallback import SessionVoiceStore
from media.loopback import LoopbackPipeline
from media.pipeline import PipelineFactory
from media.turn_detector import TurnConfig

PIPELINES = ("voice", "loopback")
_MEDIA_TYPES = ("mic_audio_seconds", "speech_audio_seconds")
_ENGINE_TYPES = ("stt_seconds", "tts_characters", "agent_tokens")


@dataclass
class PipelineRuntime:
    """The factory every call uses, and the process-wide engines behind it."""

    factory: PipelineFactory
    avatar_factory: Callable[[], AvatarVideoTrack] | None
    # What every call consumes, and so the quota a session needs left to start (the avatar's is optional).
    usage_types: tuple[str, ...]
    avatars: AvatarEngines
    engines: Engines | None = None
    # The highest audio rate the pipeline hears, told to browsers in the answer (media.opus_answer).
    max_playback_hz: int | None = None

    async def aclose(self) -> None:
        await self.avatars.aclose()
        if self.engines is not None:
            await self.engines.aclose()


async def start_pipelines(
    name: str,
    engine_config: EngineConfig,
    turn_config: TurnConfig,
    agent_store: AgentSessionStore | None = None,
    message_store: MessageStore | None = None,
    voice_store: SessionVoiceStore | None = None,
) -> PipelineRuntime:
    avatars = build_avatar(engine_config)
    renderer = avatars.renderer
    avatar_factory = functools.partial(AvatarVideoTrack, renderer) if renderer is not None else None
    if name == "loopback":
        return PipelineRuntime(LoopbackPipeline, avatar_factory, _MEDIA_TYPES, avatars)
    if name == "voice":
        from media.voice_pipeline import VoicePipeline

        engines = build_engines(engine_config)
        # Models load before the first call, not during it.
        await asyncio.gather(engines.warm_up(), asyncio.to_thread(vad_batch.stream_session))
        factory = functools.partial(
            VoicePipeline, engines=engines, turn_config=turn_config, agent_store=agent_store, message_store=message_store,
            voice_store=voice_store,
        )
        return PipelineRuntime(
            factory, avatar_factory, _MEDIA_TYPES + _ENGINE_TYPES, avatars, engines, max_playback_hz=VoicePipeline.inbound_rate
        )
    await avatars.aclose()
    raise ValueError(f"unknown PIPELINE {name!r}; choose one of {', '.join(PIPELINES)}")
