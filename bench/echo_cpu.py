"""CPU per echoed audio call: N loopback calls against a real server process, server CPU measured.

Usage: python bench/echo_cpu.py [--calls 10] [--seconds 20]
Prints the server's CPU use (% of one core) per call, and how many such calls one core holds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server_process import server_process  # noqa: E402
from tests.rtc_client import PcmSourceTrack, RtcClient, sine  # noqa: E402


async def measure(base_url: str, pid: int, calls: int, seconds: float) -> tuple[float, float]:
    server = psutil.Process(pid)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/dev/token", json={"user_id": "bench-cpu"}) as resp:
            token = (await resp.json())["access_token"]
        idle_before = server.cpu_times()
        await asyncio.sleep(3)
        idle_after = server.cpu_times()
        idle = (idle_after.user + idle_after.system - idle_before.user - idle_before.system) / 3
        clients = [RtcClient(base_url, token, source=PcmSourceTrack(sine(440 + i, seconds + 30))) for i in range(calls)]
        for client in clients:
            await client.connect(http)
        for client in clients:
            await client.wait_connected()
        await asyncio.sleep(2)  # settle
        before = server.cpu_times()
        await asyncio.sleep(seconds)
        after = server.cpu_times()
        busy = (after.user + after.system - before.user - before.system) / seconds
        for client in clients:
            await client.hangup(http)
    return idle, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    with server_process(PIPELINE="loopback") as (base_url, proc):
        idle, busy = asyncio.run(measure(base_url, proc.pid, args.calls, args.seconds))
    per_call = (busy - idle) / args.calls * 100
    print(f"server idle: {idle * 100:.2f}% of a core")
    print(f"{args.calls} echoed calls: {busy * 100:.1f}% of a core")
    print(f"per call: {per_call:.2f}% of a core  ->  about {100 / per_call:.0f} calls per core")


if __name__ == "__main__":
    main()
