"""Choosing what every call on this node does with its media, and loading what that needs once."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass

from agent_bridge.config import EngineConfig
from agent_bridge.registry import Engines, build_avatar, build_engines
from media import vad
from media.avatar_track import AvatarVideoTrack
from media.loopback import LoopbackPipeline
from media.pipeline import PipelineFactory
from media.turn_detector import TurnConfig

PIPELINES = ("voice", "loopback")


@dataclass
class PipelineRuntime:
    """The factory every call uses, and the process-wide engines behind it."""

    factory: PipelineFactory
    avatar_factory: Callable[[], AvatarVideoTrack] | None
    engines: Engines | None = None

    async def aclose(self) -> None:
        if self.engines is not None:
            await self.engines.aclose()


async def start_pipelines(name: str, engine_config: EngineConfig, turn_config: TurnConfig) -> PipelineRuntime:
    avatar = build_avatar(engine_config)
    avatar_factory = functools.partial(AvatarVideoTrack, avatar) if avatar is not None else None
    if name == "loopback":
        return PipelineRuntime(LoopbackPipeline, avatar_factory)
    if name == "voice":
        from media.voice_pipeline import VoicePipeline

        engines = build_engines(engine_config)
        # Models load before the first call, not during it.
        await asyncio.gather(engines.warm_up(), asyncio.to_thread(vad.load_session))
        factory = functools.partial(VoicePipeline, engines=engines, turn_config=turn_config)
        return PipelineRuntime(factory, avatar_factory, engines)
    raise ValueError(f"unknown PIPELINE {name!r}; choose one of {', '.join(PIPELINES)}")
