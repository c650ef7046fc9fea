"""Resources across connect/hang-up cycles: threads, open fds and RSS of a real server process.

Usage: python bench/lifecycle_cycles.py [--cycles 400] [--concurrency 4] [--warmup 10] [--warmup-burst 8]

Starts `run.py` with the voice pipeline, the offline engines and the avatar (rate and call limits
off, MEDIA_TIMEOUT_S=2), warms it up (a few cycles, then a burst of video calls at once, so pools
that grow with concurrency have grown), takes the server's figures once no call is live and its
threads and fds have been still for 3 s, runs the cycles, waits the same way, and prints the
figures again: the change, the threads that grew by name (Python threads named through py-spy,
the rest counted as native) and the fds that changed by kind. `--attach URL:PID` measures a server
that is already running (DEV_MODE=1) instead.

Every cycle is one call by an aiortc client; half of them ask for the avatar's video. Cycles end,
in turn:
  - delete:  the client calls DELETE /api/v1/sessions/{id} and then closes its peer connection;
  - vanish:  the client never tells the server. With `--vanish close` (aiortc's pc.close()) the
             server still gets DTLS close_notify; with `--vanish drop` the client's ICE sockets are
             closed first, so nothing at all reaches the server (a crashed browser, a dead network)
             and the call ends through MEDIA_TIMEOUT_S or ICE consent failure (~30 s);
             `--vanish mixed` (the default) alternates the two.
Vanished calls that the server has not ended yet are capped (`--max-lingering`): a new cycle
waits for one to end, so the server never carries more than that many orphaned calls.

The figures are printed, never judged: the exit status is non-zero only if the run itself fails.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.process_figures import Figures, figures, report, settled_figures  # noqa: E402,F401
from bench.server_process import server_process  # noqa: E402
from tests.rtc_client import PcmSourceTrack, RtcClient, sine  # noqa: E402

# How long a vanished client's call may live on: MEDIA_TIMEOUT_S ends it in seconds, aiortc's ICE
# consent check (without it) in about 30 s.
LINGER_TIMEOUT_S = 120.0

# server_process turns every limit off.
SERVER_ENV = {
    "PIPELINE": "voice",
    "AVATAR_ENGINE": "rendered",
    "MEDIA_TIMEOUT_S": "2",
}




# -- the cycles ---------------------------------------------------------------------------------


async def _drop_silently(client: RtcClient) -> None:
    """Vanish without a word: close the ICE sockets first, so not even DTLS close_notify gets out."""
    assert client.pc is not None
    for transceiver in client.pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None:
            await dtls.transport.stop()  # RTCIceTransport: closes aioice's sockets, sends nothing
    await client.close()  # DTLS shutdown now fails to send, which aiortc ignores


@dataclass
class Cycles:
    base_url: str
    token: str
    http: aiohttp.ClientSession
    hold_s: float
    vanish: str
    max_lingering: int

    def __post_init__(self) -> None:
        self.lingering = asyncio.Semaphore(self.max_lingering)
        self.ended_by: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self._vanished: dict[str, float] = {}  # session id -> when its client vanished (monotonic)
        self._poller: asyncio.Task[None] | None = None
        self._sessions: list[str] = []

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call_state(self, session_id: str) -> str:
        async with self.http.get(f"{self.base_url}/api/v1/sessions/{session_id}", headers=self.headers) as resp:
            resp.raise_for_status()
            return (await resp.json())["call_state"]

    async def wait_ended(self, session_id: str, timeout_s: float = LINGER_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.call_state(session_id) == "ended":
                return
            await asyncio.sleep(0.25)
        raise TimeoutError(f"call {session_id} still live after {timeout_s:.0f} s")

    async def one(self, index: int) -> None:
        """Cycle `index`: video on odd pairs, ended by DELETE on even indexes, by vanishing on odd ones."""
        want_video = (index // 2) % 2 == 1
        ending = "delete" if index % 2 == 0 else "vanish"
        if ending == "vanish":
            ending = {"close": "close", "drop": "drop"}.get(self.vanish) or ("close" if (index // 2) % 2 else "drop")
            # A vanished call lingers on the server until it notices: hold a slot until it does.
            await self.lingering.acquire()
        source = PcmSourceTrack(sine(300 + index % 200, 60.0, amplitude=3000))
        client = RtcClient(self.base_url, self.token, source=source, want_video=want_video)
        try:
            await client.connect(self.http)
            await client.wait_connected(timeout=60)
            assert client.session_id is not None
            self._sessions.append(client.session_id)
            await asyncio.sleep(self.hold_s)
            if want_video:  # the avatar's encoder is made with its first frame: wait for one
                await _until(lambda: bool(client.video_frames), 60.0)
            if ending == "delete":
                await client.hangup(self.http)
            elif ending == "close":
                await client.close()
            else:
                await _drop_silently(client)
            self.ended_by[ending] += 1
        except Exception as exc:
            self.failures.append(f"cycle {index}: {type(exc).__name__}: {exc}")
            await client.close()
            if client.session_id is not None:
                with contextlib.suppress(Exception):
                    async with self.http.delete(
                        f"{self.base_url}/api/v1/sessions/{client.session_id}", headers=self.headers
                    ):
                        pass
        finally:
            if ending in ("close", "drop"):
                if client.session_id is None:
                    self.lingering.release()
                else:
                    self._watch_vanished(client.session_id)

    def _watch_vanished(self, session_id: str) -> None:
        self._vanished[session_id] = time.monotonic()
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll_vanished())

    async def _poll_vanished(self) -> None:
        """Frees a lingering slot when the server has ended a vanished call.

        One request at a time: concurrent polls would grow the server's database pool, and the
        bench would be measuring its own load.
        """
        while self._vanished:
            for session_id, since in list(self._vanished.items()):
                try:
                    ended = await self.call_state(session_id) == "ended"
                except Exception as exc:
                    self.failures.append(f"{session_id}: {type(exc).__name__}: {exc}")
                    ended = True
                if not ended and time.monotonic() - since > LINGER_TIMEOUT_S:
                    self.failures.append(f"{session_id}: still live {LINGER_TIMEOUT_S:.0f} s after its client vanished")
                    ended = True
                if ended:
                    del self._vanished[session_id]
                    self.lingering.release()
            await asyncio.sleep(0.25)

    async def burst(self, calls: int, hold_s: float) -> None:
        """`calls` video calls at once, then DELETE them all.

        Part of the warm-up: pools that grow with concurrency and then stay (the loop's default
        executor, where aiortc encodes video frames; the database pool) reach the size the cycles
        will use, so the figures compare calls, not pools filling up.
        """
        clients = [
            RtcClient(self.base_url, self.token, source=PcmSourceTrack(sine(500 + i, 60.0, amplitude=3000)), want_video=True)
            for i in range(calls)
        ]
        try:
            await asyncio.gather(*(client.connect(self.http) for client in clients))
            await asyncio.gather(*(client.wait_connected(timeout=60) for client in clients))
            await asyncio.gather(*(_until(lambda c=client: bool(c.video_frames), 60.0) for client in clients))
            await asyncio.sleep(hold_s)
            await asyncio.gather(*(client.hangup(self.http) for client in clients))
        except Exception as exc:
            self.failures.append(f"burst: {type(exc).__name__}: {exc}")
        finally:
            await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
            self._sessions.extend(c.session_id for c in clients if c.session_id is not None)
            await self.drain()

    async def run(self, first: int, count: int, concurrency: int, progress: Callable[[int], None] | None = None) -> None:
        """Cycles `first`.. `first + count - 1`, `concurrency` at a time; `progress(done)` every 50."""
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(first, first + count):
            queue.put_nowait(index)
        done = 0

        async def worker() -> None:
            nonlocal done
            while True:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await self.one(index)
                done += 1
                if progress is not None and done % 50 == 0:
                    progress(done)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await self.drain()

    async def drain(self) -> None:
        """Wait until every call these cycles made has ended on the server."""
        if self._poller is not None:
            await self._poller
        for session_id in self._sessions:
            try:
                await self.wait_ended(session_id)
            except Exception as exc:
                self.failures.append(f"{session_id}: {type(exc).__name__}: {exc}")
        self._sessions.clear()


async def _until(predicate, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def measure(base_url: str, pid: int, args: argparse.Namespace) -> tuple[Figures, Figures, Cycles]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/dev/token", json={"user_id": "bench-lifecycle"}) as resp:
            token = (await resp.json())["access_token"]
        cycles = Cycles(base_url, token, http, args.hold, args.vanish, args.max_lingering)
        print(f"server pid {pid}; started: {figures(pid).line()}", flush=True)
        t0 = time.monotonic()
        await cycles.run(0, args.warmup, min(args.concurrency, max(1, args.warmup)))
        if args.warmup_burst:
            await cycles.burst(args.warmup_burst, hold_s=2.0)
        before = await settled_figures(pid)
        print(
            f"after {args.warmup} warm-up cycles and {args.warmup_burst} calls at once ({time.monotonic() - t0:.0f} s):"
            f" {before.line()}",
            flush=True,
        )
        cycles.ended_by.clear()
        t0 = time.monotonic()

        def progress(done: int) -> None:
            # Live calls included: the trend says whether anything grows with the count of calls.
            rate = done / (time.monotonic() - t0)
            print(f"  {done}/{args.cycles} cycles ({rate:.1f}/s), live calls included: {figures(pid).line()}", flush=True)

        await cycles.run(args.warmup, args.cycles, args.concurrency, progress)
        after = await settled_figures(pid)
        print(f"after {args.cycles} cycles ({time.monotonic() - t0:.0f} s): {after.line()}", flush=True)
    return before, after, cycles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4, help="calls in progress at once (client side)")
    parser.add_argument("--warmup", type=int, default=10, help="cycles before the 'before' figures")
    parser.add_argument("--warmup-burst", type=int, default=8, help="video calls at once at the end of the warm-up")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds each call stays connected")
    parser.add_argument("--vanish", choices=("mixed", "close", "drop"), default="mixed")
    parser.add_argument("--max-lingering", type=int, default=16, help="vanished calls the server may still hold")
    parser.add_argument("--attach", metavar="URL:PID", help="measure a server already running (DEV_MODE=1) instead")
    args = parser.parse_args()
    if args.attach:
        url, _, pid = args.attach.rpartition(":")
        before, after, cycles = asyncio.run(measure(url, int(pid), args))
    else:
        with server_process(**SERVER_ENV) as (base_url, proc):
            before, after, cycles = asyncio.run(measure(base_url, proc.pid, args))
    print()
    print(f"{args.cycles} cycles after {args.warmup} warm-up, concurrency {args.concurrency}; ended by: "
          + ", ".join(f"{k} {v}" for k, v in sorted(cycles.ended_by.items())))
    report(before, after)
    if cycles.failures:
        print(f"{len(cycles.failures)} cycles failed; first: {cycles.failures[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
