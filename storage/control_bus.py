"""Messages between server nodes over the Postgres they share: LISTEN on one connection, NOTIFY to send.

Each node listens on its own channel and on one channel every node hears. A message is a JSON
object; one too large for a NOTIFY payload goes as ordered chunks and is put together again here.
Messages one node sends to another arrive in the order they were sent, because `send` commits one
NOTIFY after the other. Postgres keeps nothing for a channel nobody listens to: what must survive
a node lives in tables, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

BROADCAST = "vas_all_nodes"
# NOTIFY payloads must stay under 8000 bytes; leave room for the chunk envelope.
_CHUNK_BYTES = 7000
_MAX_PARTIAL = 256  # messages being put together at once; the oldest is dropped past this
_RECONNECT_S = 1.0

Message = dict[str, Any]
OnMessage = Callable[[Message], None]


def node_channel(node_id: str) -> str:
    """A node's own channel: an identifier Postgres takes whatever the node id looks like."""
    return "vas_node_" + hashlib.sha256(node_id.encode()).hexdigest()[:24]


def encode(message: Message) -> list[str]:
    """The NOTIFY payloads that carry `message`: itself, or its chunks in order."""
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    data = text.encode()
    if len(data) <= _CHUNK_BYTES:
        return [text]
    # Cut on character boundaries so each chunk is valid text on its own.
    parts, start = [], 0
    while start < len(text):
        end = start + _CHUNK_BYTES // 4
        parts.append(text[start:end])
        start = end
    chunk_id = uuid.uuid4().hex
    return [
        json.dumps({"chunk": chunk_id, "i": i, "n": len(parts), "data": part}, separators=(",", ":"), ensure_ascii=False)
        for i, part in enumerate(parts)
    ]


class Reassembler:
    """Chunks in, whole messages out; bounded, so a sender that dies mid-message leaks nothing."""

    def __init__(self) -> None:
        self._partial: OrderedDict[str, list[str]] = OrderedDict()

    def feed(self, payload: str) -> Message | None:
        try:
            item = json.loads(payload)
        except json.JSONDecodeError:
            log.warning("control bus: a payload that is not JSON was dropped")
            return None
        if not isinstance(item, dict):
            return None
        if "chunk" not in item:
            return item
        key, index, total = str(item["chunk"]), int(item["i"]), int(item["n"])
        parts = self._partial.setdefault(key, [])
        if index != len(parts):  # chunks of one message come in order; anything else is lost
            self._partial.pop(key, None)
            return None
        parts.append(str(item["data"]))
        while len(self._partial) > _MAX_PARTIAL:
            self._partial.popitem(last=False)
        if len(parts) < total:
            return None
        del self._partial[key]
        whole = json.loads("".join(parts))
        return whole if isinstance(whole, dict) else None


class ControlBus:
    """This node's end of the bus: `start` listens (and keeps listening across reconnects), `send` sends."""

    def __init__(self, dsn: str, pool: asyncpg.Pool, node_id: str, on_message: OnMessage) -> None:
        self._dsn = dsn
        self._pool = pool
        self.node_id = node_id
        self.channel = node_channel(node_id)
        self._on_message = on_message
        self._reassembler = Reassembler()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._send_lock = asyncio.Lock()

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._listen_forever())
        await asyncio.wait_for(self._listening.wait(), 10)

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    async def send(self, node_id: str | None, message: Message, *, ordered: bool = True) -> None:
        """To one node, or with None to every node (this one included).

        Ordered messages are committed one after the other, so the receiver sees them in that order;
        an unordered one (a request or its answer) does not wait behind a stream of ordered ones.
        A chunked message always goes in order, so its chunks never interleave.
        """
        channel = node_channel(node_id) if node_id is not None else BROADCAST
        payloads = encode(message)
        if not ordered and len(payloads) == 1:
            await self._pool.execute("select pg_notify($1, $2)", channel, payloads[0])
            return
        async with self._send_lock:
            for payload in payloads:
                await self._pool.execute("select pg_notify($1, $2)", channel, payload)

    def _deliver(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        message = self._reassembler.feed(payload)
        if message is not None:
            try:
                self._on_message(message)
            except Exception:
                log.exception("control bus: handling a message failed")

    async def _listen_forever(self) -> None:
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn)
                conn.add_termination_listener(lambda _c: lost.set())
                await conn.add_listener(self.channel, self._deliver)
                await conn.add_listener(BROADCAST, self._deliver)
                self._conn = conn
                self._listening.set()
                await lost.wait()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("control bus: listening connection failed: %s", exc)
            finally:
                self._listening.clear()
                conn, self._conn = self._conn, None
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(_RECONNECT_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
