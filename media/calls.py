"""The sessions and calls live on this node: lobbies before the offer, one Call per session after it."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiortc import RTCIceServer

from media.avatar_track import AvatarVideoTrack
from media.call import Call, CallEnded, CallStateError
from media.call_accounting import Accounting
from media.call_limits import CallLimits
from media.call_state import is_live
from media.events import EventSink
from media.ice_candidates import IceCandidateInit, parse_candidate
from media.pipeline import PipelineFactory
from media.sdp_check import InvalidOffer
from media.session_lobby import CandidateBudget, SessionLobby

log = logging.getLogger(__name__)

# Sessions that ended here recently, so a late WebSocket hears "ended" rather than waiting.
_RECENTLY_ENDED = 1024


class AtCapacity(Exception):
    """This node runs as many calls as it may."""


class CallRegistry:
    """At most one Call per session; offers, hang-ups and candidates for a session meet here."""

    def __init__(
        self,
        *,
        ice_servers: Callable[[], list[RTCIceServer]],
        pipeline_factory: PipelineFactory,
        avatar_factory: Callable[[], AvatarVideoTrack] | None,
        limits: CallLimits,
        max_calls: int,
        accounting: Callable[[CallRegistry], Accounting],
        max_playback_hz: int | None = None,
    ) -> None:
        self._ice_servers = ice_servers  # called per call: TURN credentials expire, so each call gets fresh ones
        self.pipeline_factory = pipeline_factory  # public: tests swap in a faulty pipeline
        self._avatar_factory = avatar_factory
        self._max_playback_hz = max_playback_hz  # the highest audio rate the pipeline hears (None: all)
        self.limits = limits
        self.max_calls = max_calls  # 0 = unlimited
        self._lobbies: dict[str, SessionLobby] = {}
        self._calls: dict[str, Call] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()
        self.accounting = accounting(self)
        # Told when this node has claimed a session for its call (the cluster tells the other nodes).
        self.on_claimed: Callable[[uuid.UUID], Awaitable[None]] | None = None
        # Told of each answered call and when its offer arrived (time.monotonic()): metrics follow its events.
        self.on_answered: Callable[[Call, float], None] | None = None

    def __len__(self) -> int:
        return len(self._calls)

    @property
    def lobbies(self) -> int:
        return len(self._lobbies)

    def is_waiting(self, session_id: uuid.UUID) -> bool:
        """Whether the session has a lobby here (candidates or event sockets before its offer)."""
        return str(session_id) in self._lobbies

    def get(self, session_id: uuid.UUID) -> Call | None:
        return self._calls.get(str(session_id))

    def live_calls(self) -> list[Call]:
        """Calls that have media (an accepted offer) and have not ended."""
        return [c for c in self._calls.values() if is_live(c.state)]

    # -- before the offer --------------------------------------------------------------------

    def _lobby(self, session_id: uuid.UUID, user_id: str, expires_at: datetime) -> SessionLobby:
        key = str(session_id)
        lobby = self._lobbies.get(key)
        if lobby is None:
            lobby = SessionLobby(key, user_id, expires_at, CandidateBudget(self.limits.max_candidates))
            lobby.expire_with(self._lobby_expired)
            self._lobbies[key] = lobby
        return lobby

    def _lobby_expired(self, lobby: SessionLobby) -> None:
        if self._lobbies.get(lobby.session_id) is lobby and lobby.session_id not in self._calls:
            del self._lobbies[lobby.session_id]
            lobby.close("expired")

    def subscribe(self, session_id: uuid.UUID, user_id: str, expires_at: datetime, sink: EventSink) -> tuple[str, Callable[[], None]]:
        """Follow the session's events from now on; returns its state now and how to stop.

        The caller has checked `end_reason` first: a session ended here gets no lobby.
        """
        call = self._calls.get(str(session_id))
        if call is not None:
            return str(call.state), call.events.subscribe(sink)
        return "new", self._lobby(session_id, user_id, expires_at).events.subscribe(sink)

    def end_reason(self, session_id: uuid.UUID) -> str | None:
        return self._ended.get(str(session_id))

    async def add_candidate(self, session_id: uuid.UUID, user_id: str, expires_at: datetime, init: IceCandidateInit) -> None:
        """Raises InvalidCandidate, TooManyCandidates or CallEnded."""
        parsed = parse_candidate(init, self.limits.max_candidate_chars)
        key = str(session_id)
        if key in self._ended:
            raise CallEnded("the session has ended")
        call = self._calls.get(key)
        if call is not None:
            call.candidate_budget.take()
            await call.add_ice_candidate(parsed)
            return
        self._lobby(session_id, user_id, expires_at).add(init, parsed)

    def hand_over_lobby(self, session_id: uuid.UUID) -> SessionLobby | None:
        """The session's call is on another node: what waited here leaves the registry to follow it."""
        key = str(session_id)
        if key in self._calls:
            return None
        lobby = self._lobbies.pop(key, None)
        if lobby is not None:
            lobby.stop_expiry()
        return lobby

    # -- the call ----------------------------------------------------------------------------

    async def start_call(self, session_id: uuid.UUID, user_id: str, expires_at: datetime, sdp: str) -> str:
        """Claim the session for this node, then make its call from the offer; returns the answer.

        Claiming is one atomic statement in the shared database, so a session is offered once in
        the whole cluster. Raises InvalidOffer (the claim is given back: the session can take another
        offer), CallStateError (a call exists anywhere, or a hang-up won: CallEnded), AtCapacity,
        or a storage error (no call is left running).
        """
        offered_at = time.monotonic()
        key = str(session_id)
        if key in self._ended:
            raise CallEnded("the session has ended")
        if key in self._calls:
            raise CallStateError("the session already has a call")
        if self.max_calls and len(self._calls) >= self.max_calls:
            raise AtCapacity(f"this server runs its maximum of {self.max_calls} calls")
        lobby = self._lobby(session_id, user_id, expires_at)
        call = Call(
            lobby,
            ice_servers=self._ice_servers(),
            pipeline_factory=self.pipeline_factory,
            avatar_factory=self._avatar_factory,
            limits=self.limits,
            on_connected=self._connected,
            on_ended=self._call_ended,
            max_playback_hz=self._max_playback_hz,
        )
        self._calls[key] = call
        try:
            claimed = await self.accounting.claim(session_id)
        except BaseException:
            await self._abandon(call)
            raise
        if not claimed:
            await self._abandon(call)
            # A hang-up that ended the session in Postgres while this offer was on its way won the race:
            # the lobby this offer made goes as a hang-up's would.
            reason = self._ended.get(key) or await self.accounting.end_reason(session_id)
            if reason is not None:
                self._remember_ended(key, reason)
                lobby = self._lobbies.pop(key, None)
                if lobby is not None:
                    lobby.close(reason)
                raise CallEnded("the session has ended")
            raise CallStateError("the session is already offered")
        try:
            answer = await call.accept_offer(sdp)
        except CallEnded:
            await call.close("hangup")  # the hang-up's own close; it records the end
            raise
        except BaseException:
            # A refused offer costs this attempt only: the claim, the lobby and its candidates stay.
            await self._abandon(call)
            await self.accounting.unclaim(session_id)
            raise
        # The call has taken over the lobby's subscribers, candidates and budget.
        if self._lobbies.get(key) is lobby:
            del self._lobbies[key]
            lobby.close(None)
        if self.on_answered is not None:
            try:
                self.on_answered(call, offered_at)
            except Exception:  # a metrics bug must not cost the call
                log.exception("observing call %s failed", key)
        try:
            await self.accounting.call_started(call)
        except BaseException:
            await call.close("start_failed")
            raise
        if self.on_claimed is not None:
            try:
                await self.on_claimed(session_id)
            except Exception:  # other nodes miss a hand-over; the call itself is fine
                log.warning("announcing the claim of %s failed", key, exc_info=True)
        return answer

    async def _abandon(self, call: Call) -> None:
        await call.abandon()
        if self._calls.get(call.session_id) is call:
            del self._calls[call.session_id]

    async def _connected(self, call: Call, _: str) -> None:
        await self.accounting.connected(call)

    async def _call_ended(self, call: Call, reason: str) -> None:
        if self._calls.get(call.session_id) is call:
            del self._calls[call.session_id]
        self._remember_ended(call.session_id, reason)
        await self.accounting.ended(call, reason)

    def _remember_ended(self, key: str, reason: str) -> None:
        self._ended[key] = reason
        self._ended.move_to_end(key)
        while len(self._ended) > _RECENTLY_ENDED:
            self._ended.popitem(last=False)

    async def hang_up(self, session_id: uuid.UUID, reason: str = "hangup") -> bool:
        """End the session's call or lobby here; returns whether a call ended."""
        key = str(session_id)
        lobby = self._lobbies.pop(key, None)
        call = self._calls.get(key)
        if call is None:
            if lobby is not None:
                self._remember_ended(key, reason)
                lobby.close(reason)
            return False
        if lobby is not None:
            lobby.close(None)  # an offer is being answered: the call announces the end
        await call.close(reason)
        return True

    async def close_all(self, reason: str = "server_shutdown") -> None:
        for key in list(self._lobbies):
            self._lobbies.pop(key).close(reason)
        calls = list(self._calls.values())
        results = await asyncio.gather(*(c.close(reason) for c in calls), return_exceptions=True)
        for call, result in zip(calls, results):
            if isinstance(result, BaseException):
                log.error("closing call %s failed", call.session_id, exc_info=result)


__all__ = ["AtCapacity", "CallRegistry", "InvalidOffer"]
