"""One call: its peer connection, its tracks, its pipeline and its tasks, from offer to teardown.

A Call is made for an offer and lives new -> connecting -> connected -> ending -> ended (see
media.call_state). Closing is idempotent and always completes; a hang-up that arrives while the
offer is being answered waits for the answer to exist, so the peer connection it closes has
opened every socket it ever will, and the offer then fails with CallEnded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiortc import RTCConfiguration, RTCIceCandidate, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtp import RtpPacket

from media.aiortc_internals import release_transports, tap_inbound_rtp
from media.avatar_relay import AvatarRelay
from media.avatar_track import AvatarVideoTrack
from media.call_limits import CallLimits
from media.call_state import CallState, checked_transition, is_live
from media.call_usage import CallUsage, MeterSample
from media.call_watchdog import watch_call
from media.inbound_audio import InboundAudio
from media.opus_answer import with_max_playback
from media.outbound_audio import PacedAudioTrack
from media.pipeline import CallPipeline, ChatTurn, PipelineContext, PipelineFactory
from media.audio_jitter import use_prompt_jitter_buffer
from media.rtp_receive_path import InlineDecoder, decode_inline
from media.rtp_send_path import send_from_clock
from media.sdp_check import InvalidOffer, check_offer
from media.session_lobby import SessionLobby
from media.speech_output import SpeechRouter

log = logging.getLogger(__name__)


class CallStateError(Exception):
    """The request does not fit the call's state (e.g. a second offer)."""


class CallEnded(CallStateError):
    """The call ended (a hang-up won) while the request was under way."""


OnCallEvent = Callable[["Call", str], Awaitable[None]]

_OPUS = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
_VP8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() in ("video/vp8", "video/rtx")]

class Call:
    def __init__(
        self,
        lobby: SessionLobby,
        *,
        ice_servers: list[RTCIceServer],
        pipeline_factory: PipelineFactory,
        avatar_factory: Callable[[], AvatarVideoTrack] | None,
        limits: CallLimits,
        on_connected: OnCallEvent,
        on_ended: OnCallEvent,
        max_playback_hz: int | None = None,
    ) -> None:
        self.session_id = lobby.session_id
        self.user_id = lobby.user_id
        # The lobby's subscribers and candidate budget carry over: one stream of events per session.
        self.events = lobby.events
        self.candidate_budget = lobby.budget
        self._pending_candidates: list[RTCIceCandidate | None] = list(lobby.candidates)
        self.state = CallState.NEW
        self.end_reason: str | None = None
        self.audio_out = PacedAudioTrack()
        self.speech = SpeechRouter(self.audio_out)
        self.usage = CallUsage(self.audio_out)
        self.avatar: AvatarVideoTrack | None = None
        self.avatar_relay: AvatarRelay | None = None  # set while a LiveAvatar speaks for the call
        self._inbound: InboundAudio | None = None
        self._ice_servers = ice_servers
        self._pipeline_factory = pipeline_factory
        self._max_playback_hz = max_playback_hz  # the browser need not encode what the pipeline drops
        self._avatar_factory = avatar_factory
        self._limits = limits
        self._on_connected = on_connected
        self._on_ended = on_ended
        self._pc: RTCPeerConnection | None = None
        self._pipeline: CallPipeline | None = None
        self._decoders: list[InlineDecoder] = []
        self._accepted = False
        self._last_media_at = 0.0
        self._loop_time: Callable[[], float] | None = None  # the loop's clock, kept: asking for the loop per packet costs a getpid()
        self._tasks: set[asyncio.Task[None]] = set()
        self._critical: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Task[None] | None = None
        self._offer_lock = asyncio.Lock()

    # -- negotiation -------------------------------------------------------------------------

    async def accept_offer(self, sdp: str) -> str:
        """Answer the browser's offer; the answer carries all our candidates (we gather fully).

        InvalidOffer: the offer cannot be used (the caller abandons this call). CallEnded: a
        hang-up arrived meanwhile; the peer connection is closed by that hang-up.
        """
        async with self._offer_lock:
            if self._closing is not None:
                raise CallEnded("the session was hung up before its offer was answered")
            if self.state is not CallState.NEW:
                raise CallStateError(f"the call already has an offer (state: {self.state})")
            check_offer(sdp)
            pc = self._pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                for transceiver in pc.getTransceivers():
                    if transceiver.kind == "audio":
                        # Opus only: the inbound meter reads Opus packet durations.
                        transceiver.setCodecPreferences(_OPUS)
                # Outbound audio goes from the shared frame clock, inbound audio is decoded as it arrives.
                send_from_clock(pc.addTrack(self.audio_out), self.audio_out)
                for transceiver in pc.getTransceivers():
                    if transceiver.kind == "audio":
                        tap_inbound_rtp(transceiver.receiver, self._on_inbound_rtp)
                        use_prompt_jitter_buffer(transceiver.receiver)  # no 80 ms held back before decoding
                        self._decoders.append(decode_inline(transceiver.receiver))
                if self._avatar_factory is not None and any(t.kind == "video" for t in pc.getTransceivers()):
                    self._add_avatar(pc)
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:
                log.info("call %s: offer rejected by the WebRTC stack: %r", self.session_id, exc)
                raise InvalidOffer("the offer was rejected: it offers no codec or transport this server can use") from exc
            if self._closing is not None:
                raise CallEnded("the session was hung up while its offer was being answered")
            await self._start_media(pc)
            return with_max_playback(pc.localDescription.sdp, self._max_playback_hz)

    async def _start_media(self, pc: RTCPeerConnection) -> None:
        self._accepted = True
        self._set_state(CallState.CONNECTING)
        pc.on("connectionstatechange", self._on_connection_state)
        self._pipeline = self._pipeline_factory(PipelineContext(self.session_id, self.user_id, self.events, self.audio_out, self.speech))
        await self._pipeline.start()
        # No renegotiation: the offer's tracks are all the tracks this call will have.
        inbound = self._inbound = InboundAudio(self.session_id, self._pipeline, lambda: self._closing is not None)
        for decoder in self._decoders:
            decoder.attach(inbound.on_frame, self._pipeline.inbound_rate, inbound.on_samples)
        pending, self._pending_candidates = self._pending_candidates, []
        for candidate in pending:
            self._spawn(self._apply_candidate(candidate), "pending-candidate")
        loop = asyncio.get_running_loop()
        self._loop_time = loop.time
        self._last_media_at = loop.time()
        self._spawn(
            watch_call(self._limits, lambda: self.state, lambda: self._last_media_at, self.close_soon), "watchdog"
        )

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

    def stop_avatar(self, reason: str) -> None:
        """The avatar goes, the voice stays (its quota ran out, say)."""
        if self.avatar is None or self.avatar.readyState != "live":
            return
        if self.avatar.follow_speech in self.audio_out.sent_listeners:
            self.audio_out.sent_listeners.remove(self.avatar.follow_speech)
        self.avatar.stop()
        self.events.publish("avatar_stopped", reason=reason)
        if self.avatar_relay is not None:
            self.avatar_relay.end(reason)  # a paid avatar session stops with its video

    async def send_text(self, text: str) -> str:
        """A typed user turn into the call; the reply is spoken on the call and returned."""
        if not is_live(self.state) or self._pipeline is None:
            raise CallStateError(f"the call is not connected (state: {self.state})")
        return await self._pipeline.handle_text(text)

    async def chat(self, text: str, *, speak: bool) -> ChatTurn:
        """A typed turn answered by the call's conversation; spoken on the call only if `speak`."""
        if not is_live(self.state) or self._pipeline is None:
            raise CallStateError(f"the call is not connected (state: {self.state})")
        return await self._pipeline.handle_chat(text, speak=speak)

    async def speak(self, text: str) -> str:
        """Say `text` word for word on the call (by the avatar, while it speaks for the call)."""
        if not is_live(self.state) or self._pipeline is None:
            raise CallStateError(f"the call is not connected (state: {self.state})")
        return await self._pipeline.speak(text)

    async def add_ice_candidate(self, candidate: RTCIceCandidate | None) -> None:
        """A parsed trickled candidate (None: end of candidates); the caller has charged the budget."""
        if self.state in (CallState.ENDING, CallState.ENDED) or self._closing is not None:
            raise CallEnded("the call has ended")
        if not self._accepted:
            self._pending_candidates.append(candidate)
            return
        await self._apply_candidate(candidate)

    async def _apply_candidate(self, parsed: RTCIceCandidate | None) -> None:
        assert self._pc is not None
        try:
            await self._pc.addIceCandidate(parsed)
        except ValueError:  # a candidate for a section we did not negotiate
            pass

    # -- media -------------------------------------------------------------------------------

    def _on_inbound_rtp(self, packet: RtpPacket) -> None:
        self._last_media_at = self._loop_time() if self._loop_time is not None else asyncio.get_running_loop().time()
        self.usage.on_inbound_audio_packet(packet)

    def _on_connection_state(self) -> None:
        assert self._pc is not None
        state = self._pc.connectionState
        if state == "connected" and self.state is CallState.CONNECTING:
            self.usage.connected.start()
            self._last_media_at = asyncio.get_running_loop().time()
            self._set_state(CallState.CONNECTED)
            self._spawn(self._on_connected(self, "connected"), "mark-connected")
        elif state == "failed":
            self.close_soon("ice_failed")
        elif state == "closed":
            self.close_soon("peer_closed")
        # aiortc never reports "disconnected" for a vanished peer: the watchdog's media timeout does.

    # -- lifecycle ---------------------------------------------------------------------------

    def _set_state(self, state: CallState, *, announce: bool = True, **extra: object) -> None:
        self.state = checked_transition(self.state, state)
        if announce:
            self.events.publish("state", state=str(state), **extra)

    def _spawn(self, coro: Awaitable[None], name: str, *, critical: bool = False) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        if critical:
            self._critical.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        critical = task in self._critical
        self._critical.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        log.error("call %s task %s failed", self.session_id, task.get_name(), exc_info=task.exception())
        self.events.publish("error", code="internal", message=f"{task.get_name()} failed")
        if critical:
            # Without its quota guard (or pipeline) the call must not go on unmetered or deaf.
            self.close_soon(f"{task.get_name()}_failed")

    def run_task(self, coro: Awaitable[None], name: str, *, critical: bool = False) -> None:
        """Run `coro` for as long as the call lives; a critical task that fails ends the call."""
        if self.state in (CallState.ENDING, CallState.ENDED) or self._closing is not None:
            if asyncio.iscoroutine(coro):
                coro.close()
            raise CallEnded("the call has ended")
        self._spawn(coro, name, critical=critical)

    def close_soon(self, reason: str) -> None:
        """Start closing from a callback that cannot await."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(reason, announce=True))

    async def close(self, reason: str) -> None:
        self.close_soon(reason)
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def abandon(self) -> None:
        """Drop a call whose offer was refused: nothing is announced or recorded, the session waits on."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close("offer_rejected", announce=False))
        await asyncio.shield(self._closing)

    async def _close(self, reason: str, *, announce: bool) -> None:
        # An offer being answered finishes first: the peer connection then has all its sockets.
        async with self._offer_lock:
            self.end_reason = reason
            self._set_state(CallState.ENDING, announce=False)
            for decoder in self._decoders:
                decoder.attach(None)  # the pipeline hears nothing more
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
                release_transports(self._pc)
            self.usage.connected.stop()
            self._set_state(CallState.ENDED, announce=announce, reason=reason)
        if announce:
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
        return self._accepted

    @property
    def frames_failed(self) -> int:
        """Inbound frames the pipeline failed on (each skipped; the call went on)."""
        return self._inbound.frames_failed if self._inbound is not None else 0

    @property
    def live_tasks(self) -> int:
        return len(self._tasks)
