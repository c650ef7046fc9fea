"""The loopback pipeline: the caller hears their own microphone, 20 ms later."""

from __future__ import annotations

import av
import numpy as np

from media.outbound_audio import SAMPLE_RATE
from media.pipeline import CallPipeline, PipelineContext


def to_mono_48k(frame: av.AudioFrame) -> np.ndarray:
    """Decoded WebRTC audio (Opus gives 48 kHz s16 stereo) as mono int16."""
    if frame.sample_rate != SAMPLE_RATE or frame.format.name != "s16":
        raise ValueError(f"loopback expects 48 kHz s16 audio, got {frame.sample_rate} Hz {frame.format.name}")
    channels = frame.layout.nb_channels
    if channels == 1:  # Opus decoded mono (LoopbackPipeline.inbound_rate): the frame's own samples, read-only
        samples = np.frombuffer(frame.planes[0], dtype=np.int16, count=frame.samples)
        samples.flags.writeable = False
        return samples
    samples = frame.to_ndarray().reshape(-1)
    by_channel = samples.reshape(-1, channels)
    first = by_channel[:, 0]
    # A mono Opus stream decodes to identical channels, whose average is the first one: no arithmetic.
    if (by_channel == first[:, None]).all():
        return first.copy()
    # Interleaved: average the channels in int32 so the sum cannot overflow.
    return (by_channel.astype(np.int32).sum(axis=1) // channels).astype(np.int16)


_MAX_QUEUED_SAMPLES = SAMPLE_RATE // 10


class LoopbackPipeline(CallPipeline):
    inbound_rate = SAMPLE_RATE  # decoded mono at 48 kHz: what the track sends, no downmix

    def __init__(self, context: PipelineContext) -> None:
        self._out = context.audio_out

    def on_audio_frame(self, frame: av.AudioFrame) -> None:
        self.on_audio_samples(to_mono_48k(frame))

    def on_audio_samples(self, samples: np.ndarray) -> None:
        # If the sender's clock runs a little fast, don't let the echo's delay grow without bound.
        if self._out.queued_samples > _MAX_QUEUED_SAMPLES:
            self._out.flush()
        self._out.push(samples)
