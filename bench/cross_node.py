"""Control requests sent to the node that holds the call, and to the other one: what the hop costs.

Two server processes on one embedded Postgres, N live voice calls spread over both. Each call has
an events socket on its own node and one on the other node. Measured at the client:
- `messages` -> reply, sent to the right node and to the wrong one;
- `DELETE` -> the last outbound frame the client receives, to the right node and to the wrong one;
- events lost: what the other node's socket got, against what the owner's socket got.

Usage: python bench/cross_node.py [--calls 20] [--messages 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server_process import server_process  # noqa: E402
from signaling.auth import TokenAuthority  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402
from tests.rtc_client import PcmSourceTrack, Recorder, RtcClient  # noqa: E402

SECRET = "bench-cross-node-" + "s" * 32
# server_process turns every limit off; the calls here are silent, so no media timeout either.
NODE_ENV = {"MEDIA_TIMEOUT_S": "0", "PIPELINE": "voice", "AVATAR_ENGINE": "none"}


class TimedRecorder(Recorder):
    """Also remembers when the last frame arrived."""

    last_frame_at: float = 0.0

    async def _run(self, track) -> None:  # type: ignore[no-untyped-def]
        while True:
            try:
                await track.recv()
            except Exception:
                return
            self.frames += 1
            self.last_frame_at = time.perf_counter()


def quantiles(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):7.1f} ms   p99 {p99:7.1f} ms   (n={len(ms)})"


async def read_events(ws: aiohttp.ClientWebSocketResponse, into: list[dict[str, object]]) -> None:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            into.append(json.loads(message.data))


async def run(calls: int, messages: int, database_url: str) -> None:
    authority = TokenAuthority(SECRET)
    env = {"DATABASE_URL": database_url, "JWT_SECRET": SECRET, "DEV_MODE": "0", **NODE_ENV}
    with server_process(**env, NODE_ID="bench-node-a") as (url_a, _), server_process(**env, NODE_ID="bench-node-b") as (url_b, _):
        nodes = [url_a, url_b]
        async with aiohttp.ClientSession() as http:
            clients: list[tuple[RtcClient, str, str]] = []
            sockets: list[tuple[list[dict[str, object]], list[dict[str, object]], asyncio.Task[None], asyncio.Task[None]]] = []
            for i in range(calls):
                right, wrong = nodes[i % 2], nodes[(i + 1) % 2]
                token = authority.issue(f"bench-cross-{i}")
                client = RtcClient(right, token, source=PcmSourceTrack(np.zeros(48_000 * 600, np.int16)), recorder=TimedRecorder())
                await client.connect(http)
                clients.append((client, right, wrong))
            for client, right, wrong in clients:
                await client.wait_connected()
                owner_events: list[dict[str, object]] = []
                other_events: list[dict[str, object]] = []
                ws_owner = await http.ws_connect(f"{right}/api/v1/sessions/{client.session_id}/events?access_token={client.token}")
                ws_other = await http.ws_connect(f"{wrong}/api/v1/sessions/{client.session_id}/events?access_token={client.token}")
                sockets.append((owner_events, other_events, asyncio.ensure_future(read_events(ws_owner, owner_events)), asyncio.ensure_future(read_events(ws_other, other_events))))
            await asyncio.sleep(2.0)
            started = time.time()

            timings: dict[str, list[float]] = {"message right": [], "message wrong": [], "delete right": [], "delete wrong": []}
            for round_ in range(messages):
                for client, right, wrong in clients:
                    for label, node in (("message right", right), ("message wrong", wrong)):
                        t0 = time.perf_counter()
                        async with http.post(f"{node}/api/v1/sessions/{client.session_id}/messages", json={"text": "what time is it"}, headers=client.headers) as resp:
                            assert resp.status == 200, await resp.text()
                            await resp.read()
                        timings[label].append(time.perf_counter() - t0)
            await asyncio.sleep(3.0)  # the replies finish playing

            for index, (client, right, wrong) in enumerate(clients):
                label, node = ("delete wrong", wrong) if index % 2 else ("delete right", right)
                t0 = time.perf_counter()
                async with http.delete(f"{node}/api/v1/sessions/{client.session_id}", headers=client.headers) as resp:
                    assert resp.status == 200
                await asyncio.sleep(1.5)  # anything still in flight arrives
                timings[label].append(client.recorder.last_frame_at - t0)

            lost = 0
            for owner_events, other_events, reader_a, reader_b in sockets:
                await asyncio.wait_for(asyncio.gather(reader_a, reader_b), 10)
                mine = [(e["type"], e.get("ts")) for e in owner_events if float(e.get("ts", 0)) >= started]
                theirs = {(e["type"], e.get("ts")) for e in other_events}
                lost += sum(1 for e in mine if e not in theirs)
            for client, _, _ in clients:
                await client.close()

    print(f"{calls} live voice calls over 2 nodes, {messages} message(s) per call per node")
    for label, values in timings.items():
        print(f"  {label:14s} {quantiles(values)}")
    print(f"  events lost on the other node's sockets: {lost}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as pgdata:
        postgres = EmbeddedPostgres(Path(pgdata))
        url = await postgres.start()
        try:
            await run(args.calls, args.messages, url)
        finally:
            await postgres.stop()


if __name__ == "__main__":
    asyncio.run(main())
