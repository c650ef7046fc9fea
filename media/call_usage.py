"""What one call has streamed and used so far: every meter of the call, as absolute running totals."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc.rtp import RtpPacket

from media.avatar_track import AvatarVideoTrack
from media.meters import RtpAudioMeter, VideoMeter, WallClockMeter
from media.relay_audio import SAMPLE_RATE as RELAY_RATE
from media.relay_audio import RelayAudioBuffer
from media.outbound_audio import FRAME_MS, SAMPLE_RATE, PacedAudioTrack


@dataclass(frozen=True)
class MeterSample:
    """One meter's running total: µs for time, units for counts. `track` meters are media tracks."""

    meter: str
    kind: str  # audio, video, time, count
    direction: str  # inbound, outbound, none
    usage_type: str | None  # the ledger type it is billed as, if any
    amount: int

    @property
    def is_track(self) -> bool:
        return self.kind in ("audio", "video")


@dataclass
class CallUsage:
    """The call's own meters; the pipeline adds its counters (voice activity, STT, TTS, agent)."""

    audio_out: PacedAudioTrack
    mic: RtpAudioMeter = field(default_factory=RtpAudioMeter)
    connected: WallClockMeter = field(default_factory=WallClockMeter)
    avatar: AvatarVideoTrack | None = None
    # The LiveAvatar's relayed media, metered from the room's own timestamps and samples (not billed:
    # the avatar is billed as the video we stream, `avatar_video`).
    relay_video: VideoMeter | None = None
    relay_audio: RelayAudioBuffer | None = None

    def on_inbound_audio_packet(self, packet: RtpPacket) -> None:
        self.mic.on_packet(packet.ssrc, packet.timestamp, packet.payload)

    def snapshot(self, pipeline_counters: dict[str, int]) -> list[MeterSample]:
        speech_us = self.audio_out.audio_samples_sent * 1_000_000 // SAMPLE_RATE
        samples = [
            MeterSample("mic", "audio", "inbound", "mic_audio_seconds", self.mic.media_us),
            # Speech that actually left: a barge-in flush removes the unsent rest.
            MeterSample("speech", "audio", "outbound", "speech_audio_seconds", speech_us),
            # Every frame the speech track sent, silence included: what it streamed, never billed.
            MeterSample("speech_streamed", "time", "outbound", None, self.audio_out.frames_sent * FRAME_MS * 1000),
            MeterSample("connected", "time", "none", None, self.connected.media_us),
        ]
        if self.avatar is not None:
            samples.append(MeterSample("avatar_video", "video", "outbound", "avatar_video_seconds", self.avatar.meter.media_us))
        if self.relay_video is not None:
            samples.append(MeterSample("avatar_relay_video", "video", "inbound", None, self.relay_video.media_us))
        if self.relay_audio is not None:
            relayed_us = self.relay_audio.samples_in * 1_000_000 // RELAY_RATE
            samples.append(MeterSample("avatar_relay_audio", "audio", "inbound", None, relayed_us))
        for name, (kind, direction, usage_type) in PIPELINE_METERS.items():
            if name in pipeline_counters:
                samples.append(MeterSample(name, kind, direction, usage_type, pipeline_counters[name]))
        return samples


# Counters a pipeline may report, and how each is metered and billed.
PIPELINE_METERS: dict[str, tuple[str, str, str | None]] = {
    "voice_activity": ("time", "inbound", None),
    "stt_audio": ("time", "none", "stt_seconds"),
    "tts_characters": ("count", "none", "tts_characters"),
    "agent_tokens": ("count", "none", "agent_tokens"),
}


# Tracks whose streamed time (what crossed the wire) has its own meter; any other track streams
# exactly what it meters. The speech track's `seconds` are the speech in it, silence left out.
STREAMED_METERS: dict[str, str] = {"speech": "speech_streamed"}


def usage_summary(samples: list[MeterSample]) -> dict[str, object]:
    """The call's usage as the API and the `usage` event show it."""
    by_name = {s.meter: s for s in samples}

    def seconds(us: int) -> float:
        return us // 1000 / 1000  # exact to the millisecond

    def streamed_us(track: MeterSample) -> int:
        # A session stored before the streamed meter existed shows its metered time.
        return by_name.get(STREAMED_METERS.get(track.meter, track.meter), track).amount

    return {
        "tracks": [
            {
                "track": s.meter,
                "kind": s.kind,
                "direction": s.direction,
                "media_us": s.amount,
                "seconds": seconds(s.amount),
                "streamed_seconds": seconds(streamed_us(s)),
            }
            for s in samples
            if s.is_track
        ],
        "connected_seconds": seconds(by_name["connected"].amount) if "connected" in by_name else 0.0,
        "speech_seconds": seconds(by_name["voice_activity"].amount) if "voice_activity" in by_name else 0.0,
    }
