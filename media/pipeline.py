"""What a call does with its media: the interface between the Call and its processing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np

from media.conversation_log import LoggedMessage
from media.events import EventBus
from media.outbound_audio import PacedAudioTrack
from media.speech_output import SpeechOutput, TrackSpeech


class TextNotSupported(Exception):
    """The call's pipeline has no conversation to send text to."""


@dataclass(frozen=True)
class PipelineContext:
    """Everything a pipeline may touch: its call's identity, its events and its outbound track."""

    session_id: str
    user_id: str
    events: EventBus
    audio_out: PacedAudioTrack
    # Where replies are spoken: the track itself, or the avatar while it carries the call's audio.
    speech: SpeechOutput | None = None

    @property
    def speech_out(self) -> SpeechOutput:
        return self.speech if self.speech is not None else TrackSpeech(self.audio_out)


@dataclass(frozen=True)
class ChatTurn:
    """A typed turn's answer: the reply's text and the two messages that record the exchange."""

    reply: str  # "" if the reply was stopped before all of it was queued
    user_message: LoggedMessage
    agent_message: LoggedMessage | None
    spoken: bool


class CallPipeline(ABC):
    """Consumes inbound audio frames and produces outbound audio. Runs on the event loop."""

    # The rate to have inbound Opus decoded at, mono (libopus decodes at 8, 12, 16, 24 or 48 kHz);
    # None: as aiortc decodes it (48 kHz stereo). Other codecs come as they decode.
    inbound_rate: int | None = None

    @abstractmethod
    def on_audio_frame(self, frame: av.AudioFrame) -> None:
        """Called for every decoded inbound frame; must return quickly."""

    def on_audio_samples(self, samples: np.ndarray) -> None:
        """Inbound audio decoded at `inbound_rate`, mono int16 (the pipeline's to keep): the usual way
        in for Opus, which skips making a frame. By default it is made into one for on_audio_frame."""
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.inbound_rate or 48_000
        self.on_audio_frame(frame)

    async def handle_text(self, text: str) -> str:
        """A typed user turn; returns the reply's text. Pipelines without an agent refuse."""
        raise TextNotSupported("this call does not take text messages")

    async def handle_chat(self, text: str, *, speak: bool) -> ChatTurn:
        """A typed user turn answered by the call's conversation, spoken on the call only if `speak`."""
        raise TextNotSupported("this call does not take text messages")

    async def speak(self, text: str) -> str:
        """Say `text` as it is (no agent turn); returns it once all of it is queued."""
        raise TextNotSupported("this call does not speak text")

    def counters(self) -> dict[str, int]:
        """Usage the pipeline counts itself, by meter name (see media.call_usage.PIPELINE_METERS)."""
        return {}

    async def start(self) -> None:
        """Called once the call is set up."""

    async def stop(self) -> None:
        """Called once when the call ends; must cancel whatever it started."""


PipelineFactory = Callable[[PipelineContext], CallPipeline]
