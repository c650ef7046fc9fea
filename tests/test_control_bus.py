"""The control bus over a real Postgres: order, large messages, broadcast, and listening again after a cut."""

from __future__ import annotations

import json

import pytest

from storage.control_bus import ControlBus, Reassembler, encode
from storage.database import Database
from tests.probes import until

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_chunks_put_together_again() -> None:
    message = {"kind": "event", "text": "na\u00efve \u00fcber \U0001f600 \"quoted\" \\ " * 3000, "n": 7}
    payloads = encode(message)
    assert len(payloads) > 1 and all(len(p.encode()) < 8000 for p in payloads)
    reassembler = Reassembler()
    out = [reassembler.feed(p) for p in payloads]
    assert out[:-1] == [None] * (len(payloads) - 1) and out[-1] == message
    # A message whose chunks are cut short never comes out, and does not block the next.
    assert [reassembler.feed(p) for p in encode(message)[:2]] == [None, None]
    assert reassembler.feed(json.dumps({"kind": "small"})) == {"kind": "small"}


async def test_messages_between_nodes_in_order_large_and_broadcast(database: Database) -> None:
    got_x: list[dict[str, object]] = []
    got_y: list[dict[str, object]] = []
    x = ControlBus(database.url, database.pool, "bus-node-x", got_x.append)
    y = ControlBus(database.url, database.pool, "bus-node-y", got_y.append)
    await x.start()
    await y.start()
    try:
        for n in range(200):
            await x.send("bus-node-y", {"n": n})
        big = {"n": "big", "body": "\u00e9" * 40_000}
        await x.send("bus-node-y", big)
        await x.send(None, {"n": "all"})
        assert await until(lambda: len(got_y) == 202)
        assert [m["n"] for m in got_y[:200]] == list(range(200))
        assert got_y[200] == big and got_y[201] == {"n": "all"}
        assert await until(lambda: {"n": "all"} in got_x)
        assert all(m == {"n": "all"} for m in got_x)  # x hears the broadcast, none of y's mail

        # The listening connection is cut (a database restart, say): the bus listens again.
        await database.pool.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where query like 'LISTEN%' and pid <> pg_backend_pid()"
        )
        assert await until(lambda: not y.listening, 5)
        assert await until(lambda: y.listening, 10)
        await x.send("bus-node-y", {"n": "after"})
        assert await until(lambda: got_y[-1] == {"n": "after"})
    finally:
        await x.close()
        await y.close()
