"""The LiveAvatar relay's cost and delay: CPU of our server per relayed avatar stream, and the delay from a
frame published in the avatar's room to that frame decoded at the client, p50/p95.

The avatar is the test fake (a LiveKit room served by aiortc, its frames numbered in their pixels), at
512x512 and 1280x720, 25 fps. Our server runs as its own process (run.py, AVATAR_ENGINE=liveavatar);
its CPU is read from /proc over a steady window, with and without the avatar on the same call shape
(a voice call without video is the baseline). The client is aiortc; each decoded frame's index is read
from its pixels and matched to the moment the room handed that frame to its encoder (one clock: the
fakes and the client share this process).

libwebrtc and aiortc do not connect over loopback alone, so the benchmark re-runs itself inside a
network namespace of its own (`unshare -n`, root), like tests/netns.

    .venv/bin/python bench/avatar_relay.py [--seconds 15] [--streams 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server_process import server_process  # noqa: E402
from tests.fakes.liveavatar_fake import DEFAULT_API_KEY, FakeLiveAvatar  # noqa: E402
from tests.fakes.livekit_fake import FakeLiveKitServer, read_pattern  # noqa: E402
from tests.netns import NETNS_ADDRESS, _netns_command, inside_netns  # noqa: E402
from tests.rtc_client import PcmSourceTrack, RtcClient, sine  # noqa: E402

SIZES = ((512, 512), (1280, 720))
FPS = 25


class DelayProbe:
    """Frame delays at the client: arrival minus the moment the room sent that frame."""

    def __init__(self, client: RtcClient, sent_at: dict[int, float]) -> None:
        self.client = client
        self.sent_at = sent_at
        self.delays_ms: list[float] = []
        self.unreadable = 0
        self._seen = 0

    def collect(self) -> None:
        frames, arrivals = self.client.video_frames, self.client.video_arrivals
        # keep_video_frames keeps the newest frames; arrivals keep every time: align from the end.
        new = len(arrivals) - self._seen
        self._seen = len(arrivals)
        for y_plane, arrived in zip(frames[-new:] if new else [], arrivals[-new:] if new else []):
            index, _ = read_pattern(y_plane)
            if index is None or index not in self.sent_at:
                self.unreadable += 1
                continue
            self.delays_ms.append((arrived - self.sent_at[index]) * 1000)


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


async def cpu_share(proc: psutil.Process, seconds: float, probes: tuple[DelayProbe, ...] = ()) -> float:
    """The server's CPU over `seconds`, as a share of one core; the probes read frames meanwhile."""
    start_cpu, start = cpu_seconds(proc), time.monotonic()
    while time.monotonic() - start < seconds:
        await asyncio.sleep(0.2)
        for probe in probes:
            probe.collect()
    return (cpu_seconds(proc) - start_cpu) / (time.monotonic() - start)


async def connect(base_url: str, http: aiohttp.ClientSession, *, avatar: bool, video: bool) -> RtcClient:
    client = RtcClient(base_url, "", source=PcmSourceTrack(sine(440, 600)), want_video=video, raw_luma=True)
    async with http.post(f"{base_url}/dev/token", json={"user_id": f"bench-{os.urandom(3).hex()}"}) as resp:
        client.token = (await resp.json())["access_token"]
    client.session_body = {"avatar": avatar}
    client.keep_video_frames = 64
    await client.connect(http)
    await client.wait_connected(20)
    return client


async def measure(size: tuple[int, int], seconds: float, streams: int) -> dict[str, float]:
    livekit = FakeLiveKitServer(NETNS_ADDRESS)
    await livekit.start()
    liveavatar = FakeLiveAvatar(NETNS_ADDRESS, livekit=livekit, video_size=size, fps=FPS)
    await liveavatar.start()
    env = {"PIPELINE": "loopback", "AVATAR_ENGINE": "liveavatar", "LIVEAVATAR_API_KEY": DEFAULT_API_KEY,
           "LIVEAVATAR_API_URL": liveavatar.api_url, "AVATAR_FALLBACK": "none"}
    try:
        with server_process(**env) as (base_url, proc_handle):
            server = psutil.Process(proc_handle.pid)
            async with aiohttp.ClientSession() as http:
                voice = [await connect(base_url, http, avatar=False, video=False) for _ in range(streams)]
                await asyncio.sleep(2.0)
                baseline = await cpu_share(server, seconds)
                for client in voice:
                    await client.hangup(http)
                relayed = [await connect(base_url, http, avatar=True, video=True) for _ in range(streams)]
                rooms = []
                for client in relayed:
                    sid = str(client.session["avatar"]["heygen_session_id"])  # type: ignore[index]
                    while not client.video_frames:
                        await asyncio.sleep(0.05)
                    rooms.append(livekit.rooms[sid])
                await asyncio.sleep(3.0)  # past the first keyframes and the encoders' warm-up
                probes = [DelayProbe(client, room.frame_sent_at) for client, room in zip(relayed, rooms)]
                for probe in probes:
                    probe.collect()
                    probe.delays_ms.clear()
                share = await cpu_share(server, seconds, tuple(probes))
                for client in relayed:
                    await client.hangup(http)  # while the fakes still answer: the paid session's stop is confirmed
                delays = sorted(d for probe in probes for d in probe.delays_ms)
                received = sum(len(probe.delays_ms) for probe in probes)
    finally:
        await liveavatar.close()
        await livekit.aclose()
    return {
        "baseline_cpu": baseline / streams,
        "relay_cpu": share / streams,
        "per_stream_cpu": (share - baseline) / streams,
        "fps_at_client": received / seconds / streams,
        "delay_p50_ms": statistics.median(delays) if delays else float("nan"),
        "delay_p95_ms": delays[int(0.95 * (len(delays) - 1))] if delays else float("nan"),
        "frames_unreadable": float(sum(probe.unreadable for probe in probes)),
    }


async def main(seconds: float, streams: int) -> None:
    print(f"avatar relay: {streams} stream(s), {seconds:.0f} s windows, {FPS} fps, {os.cpu_count()} cores")
    for size in SIZES:
        figures = await measure(size, seconds, streams)
        print(
            f"  {size[0]}x{size[1]}: server CPU per relayed stream {figures['per_stream_cpu'] * 100:.1f}% of a core"
            f" (call with relay {figures['relay_cpu'] * 100:.1f}%, voice-only call {figures['baseline_cpu'] * 100:.1f}%);"
            f" room -> client delay p50 {figures['delay_p50_ms']:.0f} ms, p95 {figures['delay_p95_ms']:.0f} ms;"
            f" {figures['fps_at_client']:.1f} fps at the client, {figures['frames_unreadable']:.0f} frames unread",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--streams", type=int, default=1)
    args = parser.parse_args()
    if not inside_netns():
        command = _netns_command([sys.executable, *sys.argv])
        sys.exit(subprocess.run(command, env={**os.environ, "NETNS_INSIDE": "1"}).returncode)
    asyncio.run(main(args.seconds, args.streams))
