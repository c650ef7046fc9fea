"""Any node answers for any session: requests and event streams reach the node that holds the call.

Over the control bus (storage.control_bus, Postgres LISTEN/NOTIFY) a node sends a request to the
owning node, which runs the same operation its own route would (signaling.session_ops) and sends
back the status and body. An events WebSocket on one node subscribes to the call's events on the
node that holds it; they are relayed in order. When a node claims a session for its call it tells
every node, so one that already had candidates or sockets waiting on that session hands them over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from media.events import Event
from signaling import keys
from signaling.errors import DATABASE_UNAVAILABLE, ApiError
from signaling.session_ops import OpResult, SessionRef, run_local
from storage.control_bus import ControlBus, Message

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0
MESSAGE_TIMEOUT_S = 60.0  # an agent reply can take a while
_RELAY_BACKLOG = 1024  # events queued for one remote subscriber; the oldest go first past it
_MAX_RELAYS_PER_CALL = 16


def _is_end(event: Event) -> bool:
    return event.get("type") == "state" and event.get("state") == "ended"


class _OutgoingRelay:
    """A local call's events, sent in order to a subscriber on another node until the call ends."""

    def __init__(self, bus: ControlBus, session_id: uuid.UUID, node_id: str, sub: str) -> None:
        self._bus = bus
        self.session_id = session_id
        self._node_id = node_id
        self._sub = sub
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=_RELAY_BACKLOG)
        self.unsubscribe_local: Callable[[], None] = lambda: None
        self.task: asyncio.Task[None] | None = None

    def push(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(event)

    async def pump(self) -> None:
        while True:
            event = await self._queue.get()
            await self._bus.send(self._node_id, {"kind": "event", "sub": self._sub, "event": event})
            if _is_end(event):
                return


class Cluster:
    def __init__(self, app: web.Application, node_id: str, stale_after_s: float) -> None:
        self._app = app
        self.node_id = node_id
        self._stale_after_s = stale_after_s
        self.bus: ControlBus | None = None
        self._pending: dict[str, asyncio.Future[OpResult]] = {}
        self._incoming: dict[str, Callable[[Event], None]] = {}  # sub -> sink here, for a call elsewhere
        self._outgoing: dict[str, _OutgoingRelay] = {}  # sub -> relay of a call here, to elsewhere
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, dsn: str) -> None:
        self.bus = ControlBus(dsn, self._app[keys.DB].pool, self.node_id, self._on_message)
        await self.bus.start()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.bus is not None:
            await self.bus.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- asking another node -----------------------------------------------------------------

    async def request(self, owner: str, op: str, ref: SessionRef, args: dict[str, Any], *, timeout: float = REQUEST_TIMEOUT_S) -> OpResult:
        """Run `op` on the node that holds the session's call; its answer, as if asked there."""
        assert self.bus is not None
        nodes = self._app[keys.NODES]
        request_id = uuid.uuid4().hex
        answer: asyncio.Future[OpResult] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        message = {"kind": "request", "id": request_id, "from": self.node_id, "op": op, "ref": ref.to_json(), "args": args}
        try:
            await self.bus.send(owner, message, ordered=False)
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            if await nodes.is_stale(owner, self._stale_after_s):
                await self._reap_gone_owner()
            raise ApiError(503, "node_unreachable", "the server holding this call does not answer; try again", retry_after_s=2) from None
        finally:
            self._pending.pop(request_id, None)

    async def _reap_gone_owner(self) -> None:
        """The owner stopped heartbeating: end its calls from their last flushed totals, then say so.

        Only a node that may judge liveness reaps (not one just back from an outage it shared).
        """
        liveness = self._app[keys.NODE_LIVENESS]
        if not liveness.may_reap():
            raise ApiError(503, "node_unreachable", "the server holding this call does not answer; try again", retry_after_s=2)
        await liveness.reap_dead()
        raise ApiError(409, "session_ended", "the session has ended (node_lost)")

    async def subscribe_remote(self, owner: str, ref: SessionRef, sink: Callable[[Event], None]) -> Callable[[], None]:
        """Stream the call's events from its node into `sink` (its state first); returns how to stop."""
        sub = uuid.uuid4().hex
        self._incoming[sub] = sink
        try:
            status, body = await self.request(owner, "subscribe", ref, {"sub": sub, "node": self.node_id})
        except BaseException:
            self._incoming.pop(sub, None)
            raise
        if status != 200:
            self._incoming.pop(sub, None)
            error = (body or {}).get("error", {})
            raise ApiError(status, error.get("code", "node_error"), error.get("message", "the call's node refused"))

        def unsubscribe() -> None:
            if self._incoming.pop(sub, None) is not None and self.bus is not None:
                self._spawn(self.bus.send(owner, {"kind": "unsubscribe", "sub": sub}))

        return unsubscribe

    async def announce_claim(self, session_id: uuid.UUID) -> None:
        """This node now holds the session's call: whoever kept things waiting on it hands them over."""
        assert self.bus is not None
        await self.bus.send(None, {"kind": "claimed", "session": str(session_id), "node": self.node_id})

    # -- being asked -------------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        kind = message.get("kind")
        if kind == "request":
            self._spawn(self._serve(message))
        elif kind == "response":
            answer = self._pending.get(str(message.get("id")))
            if answer is not None and not answer.done():
                answer.set_result((int(message["status"]), message.get("body")))
        elif kind == "event":
            sub = str(message.get("sub"))
            sink = self._incoming.get(sub)
            if sink is not None:
                event = message["event"]
                if _is_end(event):
                    self._incoming.pop(sub, None)
                sink(event)
        elif kind == "unsubscribe":
            relay = self._outgoing.pop(str(message.get("sub")), None)
            if relay is not None:
                self._stop_relay(relay)
        elif kind == "claimed" and message.get("node") != self.node_id:
            self._spawn(self._claimed_elsewhere(uuid.UUID(str(message["session"])), str(message["node"])))

    async def _serve(self, message: Message) -> None:
        assert self.bus is not None
        try:
            ref = SessionRef.from_json(message["ref"])
            if message["op"] == "subscribe":
                result = self._relay_to(ref, str(message["args"]["sub"]), str(message["args"]["node"]))
            else:
                result = await run_local(self._app, str(message["op"]), ref, message.get("args") or {})
        except DATABASE_UNAVAILABLE:
            result = 503, {"error": {"code": "database_unavailable", "message": "the database is not reachable; try again shortly"}}
        except Exception:
            log.exception("serving %s for node %s failed", message.get("op"), message.get("from"))
            result = 500, {"error": {"code": "internal", "message": "internal error"}}
        status, body = result
        response = {"kind": "response", "id": message["id"], "status": status, "body": body}
        await self.bus.send(str(message["from"]), response, ordered=False)

    def _relay_to(self, ref: SessionRef, sub: str, node: str) -> OpResult:
        assert self.bus is not None
        call = self._app[keys.CALLS].get(ref.session_id)
        if call is None:
            return 409, {"error": {"code": "session_ended", "message": "the session's call has ended"}}
        if sum(1 for r in self._outgoing.values() if r.session_id == ref.session_id) >= _MAX_RELAYS_PER_CALL:
            return 429, {"error": {"code": "too_many_websockets", "message": "too many event streams for this call"}}
        relay = _OutgoingRelay(self.bus, ref.session_id, node, sub)
        relay.push({"type": "state", "ts": round(time.time(), 3), "state": str(call.state)})
        relay.unsubscribe_local = call.events.subscribe(relay.push)
        relay.task = asyncio.ensure_future(relay.pump())
        relay.task.add_done_callback(lambda _t: self._relay_done(sub))
        self._outgoing[sub] = relay
        return 200, {"sub": sub}

    def _relay_done(self, sub: str) -> None:
        relay = self._outgoing.pop(sub, None)
        if relay is not None:
            self._stop_relay(relay)

    @staticmethod
    def _stop_relay(relay: _OutgoingRelay) -> None:
        relay.unsubscribe_local()
        if relay.task is not None and not relay.task.done():
            relay.task.cancel()

    async def _claimed_elsewhere(self, session_id: uuid.UUID, owner: str) -> None:
        """Another node took the session's offer: our waiting sockets follow its call, our candidates go there."""
        lobby = self._app[keys.CALLS].hand_over_lobby(session_id)
        if lobby is None:
            return
        ref = SessionRef(session_id, lobby.user_id, lobby.expires_at)
        try:
            if lobby.events.has_subscribers:
                lobby.relay_unsubscribe = await self.subscribe_remote(owner, ref, lobby.events.deliver)
            for init in lobby.raw_candidates:
                args = {"candidate": init.candidate, "sdpMid": init.sdp_mid, "sdpMLineIndex": init.sdp_mline_index}
                await self.request(owner, "ice", ref, args)
        except ApiError as exc:
            log.info("handing session %s over to %s: %s", session_id, owner, exc.message)
            with contextlib.suppress(Exception):
                lobby.events.publish("state", state="ended", reason="handover_failed")
