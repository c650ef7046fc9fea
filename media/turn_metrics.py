"""Per-turn latency, measured on the event loop's monotonic clock from the true end of speech."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TurnTimer:
    """Moments of one turn, in loop.time() seconds; None until they happen."""

    end_of_speech: float | None  # the last voiced sample (None for a typed message)
    transcript_ready: float | None = None
    agent_first_text: float | None = None
    tts_requested: float | None = None  # the first sentence went to TTS
    tts_first_audio: float | None = None
    first_frame_sent: float | None = None

    def as_event(self) -> dict[str, int | None]:
        def ms(later: float | None, earlier: float | None) -> int | None:
            if later is None or earlier is None:
                return None
            # A reply drafted during the pause (media.reply_ahead) had its text before the transcript
            # was final: that stage cost the turn nothing, so it reads 0, never negative.
            return max(0, round((later - earlier) * 1000))

        return {
            "stt_ms": ms(self.transcript_ready, self.end_of_speech),
            "agent_first_text_ms": ms(self.agent_first_text, self.transcript_ready),
            "tts_first_audio_ms": ms(self.tts_first_audio, self.tts_requested),
            "voice_to_voice_ms": ms(self.first_frame_sent, self.end_of_speech),
        }
