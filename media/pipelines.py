"""Choosing what every call on this node does with its media, and loading what that needs once."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent_bridge.config import EngineConfig
from agent_bridge.registry import Engines, build_avatar, build_engines
from media import vad
from media.avatar_track import AvatarVideoTrack
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
    engines: Engines | None = None

    async def aclose(self) -> None:
        if self.engines is not None:
            await self.engines.aclose()


async def start_pipelines(
    name: str,
    engine_config: EngineConfig,
    turn_config: TurnConfig,
    record_agent_session: Callable[[uuid.UUID, str], Awaitable[None]] | None = None,
) -> PipelineRuntime:
    avatar = build_avatar(engine_config)
    avatar_factory = functools.partial(AvatarVideoTrack, avatar) if avatar is not None else None
    if name == "loopback":
        return PipelineRuntime(LoopbackPipeline, avatar_factory, _MEDIA_TYPES)
    if name == "voice":
        from media.voice_pipeline import VoicePipeline

        engines = build_engines(engine_config)
        # Models load before the first call, not during it.
        await asyncio.gather(engines.warm_up(), asyncio.to_thread(vad.load_session))
        factory = functools.partial(
            VoicePipeline, engines=engines, turn_config=turn_config, record_agent_session=record_agent_session
        )
        return PipelineRuntime(factory, avatar_factory, _MEDIA_TYPES + _ENGINE_TYPES, engines)
    raise ValueError(f"unknown PIPELINE {name!r}; choose one of {', '.join(PIPELINES)}")
