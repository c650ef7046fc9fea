"""Calls come and go without leaving threads or file descriptors behind.

A real server process (its own /proc: threads, fds and RSS are the server's alone, not the test's)
runs the voice pipeline with the offline engines and the avatar. After a warm-up, 60 calls by an
aiortc client, half of them with the avatar's video, end in turn by DELETE and by the client
vanishing (closing its peer connection, or dropping off the network without a word). Once the
server has no live call, its threads and fds must be back within 5% (+2) of the warmed-up figures.

No outcome depends on timing: every step waits for a state (connected, a video frame, the call
ended, the figures still for 3 s), with generous ceilings only against hangs; a vanished call that
MEDIA_TIMEOUT_S does not end is ended by ICE consent (~30 s), which is slower, not different.
bench/lifecycle_cycles.py runs the same cycles at scale (400 by default) and follows RSS too.
"""

from __future__ import annotations

import asyncio
import io

import aiohttp
import pytest

from bench.lifecycle_cycles import SERVER_ENV, Cycles, report, settled_figures
from bench.server_process import server_process
from storage.database import Database

pytestmark = pytest.mark.asyncio(loop_scope="session")

WARMUP = 10
WARMUP_BURST = 8
CYCLES = 60
CONCURRENCY = 4


async def test_threads_and_fds_come_back_after_call_cycles(database: Database) -> None:
    # The suite's database, so the server does not start a Postgres of its own.
    server = server_process(**SERVER_ENV, DATABASE_URL=database.url)
    base_url, proc = await asyncio.to_thread(server.__enter__)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base_url}/dev/token", json={"user_id": "resource-cycles"}) as resp:
                token = (await resp.json())["access_token"]
            cycles = Cycles(base_url, token, http, hold_s=0.3, vanish="mixed", max_lingering=CYCLES)
            await cycles.run(0, WARMUP, CONCURRENCY)
            await cycles.burst(WARMUP_BURST, hold_s=1.0)  # pools that grow with concurrency: grown
            before = await settled_figures(proc.pid)
            await cycles.run(WARMUP, CYCLES, CONCURRENCY)
            after = await settled_figures(proc.pid)
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)

    assert not cycles.failures, cycles.failures[:3]
    figures = _report(before, after)
    threads_back = after.threads <= before.threads * 1.05 + 2
    assert threads_back, figures
    fds_back = after.fds <= before.fds * 1.05 + 2
    assert fds_back, figures
    # RSS over 60 calls is mostly the allocator settling: only a gross leak (a few hundred KiB a
    # call, ~20% here) fails this; bench/lifecycle_cycles.py follows RSS over 400 calls.
    rss_bounded = after.rss_kib <= before.rss_kib * 1.2
    assert rss_bounded, figures


def _report(before, after) -> str:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    report(before, after, out)
    return "\n" + out.getvalue()
