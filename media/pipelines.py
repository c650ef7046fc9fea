"""Choosing what every call on this node does with its media."""

from __future__ import annotations

from media.loopback import LoopbackPipeline
from media.pipeline import PipelineFactory

PIPELINES = ("loopback",)


def pipeline_factory(name: str) -> PipelineFactory:
    if name == "loopback":
        return LoopbackPipeline
    raise ValueError(f"unknown PIPELINE {name!r}; choose one of {', '.join(PIPELINES)}")
