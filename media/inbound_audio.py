"""The caller's decoded audio on its way into a call's pipeline.

Decoders hand over each frame (or, for Opus decoded at the pipeline's rate, a plain array) as its
packet arrives. A frame the pipeline fails on costs that frame only: the call keeps listening, the
failure is counted, and logged at most every FRAME_ERROR_LOG_INTERVAL_S.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import av
import numpy as np

from media.pipeline import CallPipeline

log = logging.getLogger(__name__)

FRAME_ERROR_LOG_INTERVAL_S = 10.0


class InboundAudio:
    def __init__(self, session_id: object, pipeline: CallPipeline, closing: Callable[[], bool]) -> None:
        self._session_id = session_id
        self._pipeline = pipeline
        self._closing = closing
        self.frames_failed = 0
        self._error_logged_at = float("-inf")

    def on_frame(self, frame: av.AudioFrame) -> None:
        if self._closing():
            return
        try:
            self._pipeline.on_audio_frame(frame)
        except Exception:
            self._failed()

    def on_samples(self, samples: np.ndarray) -> None:
        if self._closing():
            return
        try:
            self._pipeline.on_audio_samples(samples)
        except Exception:
            self._failed()

    def _failed(self) -> None:
        self.frames_failed += 1
        now = asyncio.get_running_loop().time()
        if now - self._error_logged_at >= FRAME_ERROR_LOG_INTERVAL_S:
            self._error_logged_at = now
            log.warning("call %s: skipped an inbound frame (%d so far)", self._session_id, self.frames_failed, exc_info=True)
