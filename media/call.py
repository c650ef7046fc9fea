"""One call: its peer connection, its tracks, its pipeline and its tasks, from offer to teardown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from media.avatar_track import AvatarVideoTrack
from media.call_usage import CallUsage, MeterSample
from media.events import EventBus
from media.outbound_audio import PacedAudioTrack
from media.pipeline import CallPipeline, PipelineContext, PipelineFactory
from media.rtp_tap import tap_inbound_rtp
from media.sdp_check import InvalidOffer, check_offer

log = logging.getLogger(__name__)


class CallStateError(Exception):
    """The request does not fit the call's state (e.g. a second offer)."""


class InvalidCandidate(ValueError):
    """A trickled ICE candidate that cannot be parsed."""


@dataclass(frozen=True)
class IceCandidateInit:
    """The browser's RTCIceCandidateInit; an empty candidate means end of candidates."""

    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None


OnCallEvent = Callable[["Call", str], Awaitable[None]]

_OPUS = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
_VP8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() in ("video/vp8", "video/rtx")]

# A peer that stays "disconnected" this long is treated as gone.
DISCONNECT_GRACE_S = 5.0


class Call:
    """States: new -> connecting -> connected -> ended. `close` is idempotent and always completes."""

    def __init__(
        self,
        session_id: str,
        user_id: str,
        *,
        ice_servers: list[RTCIceServer],
        pipeline_factory: PipelineFactory,
        avatar_factory: Callable[[], AvatarVideoTrack] | None,
        on_connected: OnCallEvent,
        on_ended: OnCallEvent,
    ) -> None:
        self.session_id = session_id
        self.user_id = user_id
        self.events = EventBus()
        self.state = "new"
        self.end_reason: str | None = None
        self.audio_out = PacedAudioTrack()
        self.usage = CallUsage(self.audio_out)
        self._ice_servers = ice_servers
        self._pipeline_factory = pipeline_factory
        self._avatar_factory = avatar_factory
        self.avatar: AvatarVideoTrack | None = None
        self._on_connected = on_connected
        self._on_ended = on_ended
        self._pc: RTCPeerConnection | None = None
        self._pipeline: CallPipeline | None = None
        self._pending_candidates: list[RTCIceCandidate | None] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Task[None] | None = None
        self._offer_lock = asyncio.Lock()

    # -- negotiation -------------------------------------------------------------------------

    async def accept_offer(self, sdp: str) -> str:
        """Answer the browser's offer; the answer carries all our candidates (we gather fully)."""
        async with self._offer_lock:
            if self.state != "new":
                raise CallStateError(f"the call already has an offer (state: {self.state})")
            check_offer(sdp)
            pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                for transceiver in pc.getTransceivers():
                    if transceiver.kind == "audio":
                        # Opus only: the inbound meter reads Opus packet durations.
                        transceiver.setCodecPreferences(_OPUS)
                pc.addTrack(self.audio_out)
                if self._avatar_factory is not None and any(t.kind == "video" for t in pc.getTransceivers()):
                    self._add_avatar(pc)
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:
                # A bad offer costs this attempt only: the call stays new and can take another.
                self._drop_avatar()
                await pc.close()
                if isinstance(exc, InvalidOffer):
                    raise
                raise InvalidOffer(f"the offer was rejected: {exc}") from exc
            self._pc = pc
            self._set_state("connecting")
            pc.on("connectionstatechange", self._on_connection_state)
            self._pipeline = self._pipeline_factory(
                PipelineContext(self.session_id, self.user_id, self.events, self.audio_out)
            )
            await self._pipeline.start()
            # No renegotiation: the offer's tracks are all the tracks this call will have.
            for receiver in pc.getReceivers():
                if receiver.track is not None and receiver.track.kind == "audio":
                    tap_inbound_rtp(receiver, self.usage.on_inbound_audio_packet)
                    self._spawn(self._consume_audio(receiver.track), f"inbound-audio-{receiver.track.id}")
            pending, self._pending_candidates = self._pending_candidates, []
            for candidate in pending:
                await self._apply_candidate(candidate)
            return pc.localDescription.sdp

    def _add_avatar(self, pc: RTCPeerConnection) -> None:
        """The browser asked for video: it gets the avatar, VP8, its mouth following our speech."""
        assert self._avatar_factory is not None
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                transceiver.setCodecPreferences(_VP8)
        self.avatar = self._avatar_factory()
        pc.addTrack(self.avatar)
        self.audio_out.sent_listeners.append(self.avatar.follow_speech)
        self.usage.avatar = self.avatar

    def _drop_avatar(self) -> None:
        if self.avatar is not None:
            self.audio_out.sent_listeners.remove(self.avatar.follow_speech)
            self.avatar.stop()
            self.avatar = None
            self.usage.avatar = None

    async def send_text(self, text: str) -> str:
        """A typed user turn into the call; the reply is spoken on the call and returned."""
        if self.state not in ("connecting", "connected") or self._pipeline is None:
            raise CallStateError(f"the call is not connected (state: {self.state})")
        return await self._pipeline.handle_text(text)

    async def add_ice_candidate(self, candidate: IceCandidateInit) -> None:
        if self.state == "ended":
            raise CallStateError("the call has ended")
        parsed = parse_candidate(candidate)  # reject garbage now, even if we only buffer it
        if self._pc is None:
            self._pending_candidates.append(parsed)
            return
        await self._apply_candidate(parsed)

    async def _apply_candidate(self, parsed: RTCIceCandidate | None) -> None:
        assert self._pc is not None
        if parsed is None:
            await self._pc.addIceCandidate(None)
            return
        with contextlib.suppress(ValueError):  # a candidate for a section we did not negotiate
            await self._pc.addIceCandidate(parsed)

    # -- media -------------------------------------------------------------------------------

    async def _consume_audio(self, track: MediaStreamTrack) -> None:
        pipeline = self._pipeline
        assert pipeline is not None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pipeline.on_audio_frame(frame)

    def _on_connection_state(self) -> None:
        assert self._pc is not None
        state = self._pc.connectionState
        if state == "connected" and self.state == "connecting":
            self.usage.connected.start()
            self._set_state("connected")
            self._spawn(self._on_connected(self, "connected"), "mark-connected")
        elif state == "failed":
            self.close_soon("ice_failed")
        elif state == "closed":
            self.close_soon("peer_closed")
        elif state == "disconnected":
            self._spawn(self._close_if_still_disconnected(), "disconnect-grace")

    async def _close_if_still_disconnected(self) -> None:
        await asyncio.sleep(DISCONNECT_GRACE_S)
        if self._pc is not None and self._pc.connectionState == "disconnected":
            self.close_soon("ice_disconnected")

    # -- lifecycle ---------------------------------------------------------------------------

    def _set_state(self, state: str, **extra: object) -> None:
        self.state = state
        self.events.publish("state", state=state, **extra)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call %s task %s failed", self.session_id, task.get_name(), exc_info=task.exception())
            self.events.publish("error", code="internal", message=f"{task.get_name()} failed")

    def run_task(self, coro: Awaitable[None], name: str) -> None:
        """Run `coro` for as long as the call lives; it is cancelled when the call ends."""
        if self.state == "ended" or self._closing is not None:
            raise CallStateError("the call has ended")
        self._spawn(coro, name)

    def close_soon(self, reason: str) -> None:
        """Start closing from a callback that cannot await."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(reason))

    async def close(self, reason: str) -> None:
        self.close_soon(reason)
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _close(self, reason: str) -> None:
        self.end_reason = reason
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._pipeline is not None:
            try:
                await self._pipeline.stop()
            except Exception:
                log.exception("pipeline of call %s failed to stop", self.session_id)
        self.audio_out.stop()
        if self.avatar is not None:
            self.avatar.stop()
        if self._pc is not None:
            await self._pc.close()
        self.usage.connected.stop()
        self._set_state("ended", reason=reason)
        try:
            await self._on_ended(self, reason)
        except Exception:
            log.exception("recording the end of call %s failed", self.session_id)

    def usage_snapshot(self) -> list[MeterSample]:
        """Every meter of the call as an absolute running total, right now."""
        counters = self._pipeline.counters() if self._pipeline is not None else {}
        return self.usage.snapshot(counters)

    @property
    def had_media(self) -> bool:
        """Whether an offer was ever accepted (so there is usage to record)."""
        return self._pc is not None

    @property
    def live_tasks(self) -> int:
        return len(self._tasks)


def parse_candidate(init: IceCandidateInit) -> RTCIceCandidate | None:
    """The browser's candidate line as aiortc's object; None for end-of-candidates."""
    line = init.candidate.strip()
    if not line:
        return None
    if line.startswith("candidate:"):
        line = line[len("candidate:") :]
    try:
        candidate = candidate_from_sdp(line)
    except Exception as exc:  # the parser asserts and indexes its way through the line
        raise InvalidCandidate(f"the ICE candidate could not be parsed: {exc}") from exc
    candidate.sdpMid = init.sdp_mid
    candidate.sdpMLineIndex = init.sdp_mline_index
    return candidate
