"""One load-generator process: many calls in one event loop (uvloop's where installed), cheap enough not
to be what saturates.

Each call is set up as a browser's would be, by an aiortc peer connection (offer/answer, ICE, DTLS, SRTP
keys, a sendrecv audio transceiver); its media then bypass aiortc (bench/load_rtp.py): pre-encoded Opus
packets are built and SRTP-protected by hand and sent for every call from one 20 ms clock, and inbound
RTP is timed and counted from its clear header as it comes off the socket, never unprotected or decoded.
aiortc still answers ICE consent checks and exchanges RTCP (the server's receiver reports give
`inbound_lost`). Like a browser, a call encodes no wider than the answer's Opus `maxplaybackrate` asks.

Driven by bench/load.py over stdin/stdout, one JSON object per line:
  out {"type": "ready", "setup": [...], "failed": n}   all calls connected and hearing the server
  in  "start"                                            the measuring window opens
  in  "stop"  -> out {"type": "stats", ...}              it closes: what each call received in it
  in  "quit"                                             hang up and exit
Usage: python -m bench.load_client --url URL [--token T] --calls N --mode speaking|listening [--voice]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from array import array

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bench.load_audio import MODES, clip
from bench.load_rtp import FrameClock, IdleTrack, OutboundRtp, connected, tap_inbound_rtp
from media.opus_answer import max_playback_of

LATE_MS = 40.0  # beyond the 20 ms cadence
Clips = dict[int | None, list[bytes]]  # the packets to send, by the answer's maxplaybackrate


class Arrivals:
    """The server's RTP as it arrives: gaps, late frames and sequence gaps, inside the window only."""

    def __init__(self) -> None:
        self.first_at: float | None = None
        self.got_first = asyncio.Event()
        self.recording = False
        self._ext_seq = -1  # unwrapped sequence number of the newest packet
        self._prev_at = 0.0
        self.reset()

    def reset(self) -> None:
        self.received = 0
        self.payload_bytes = 0
        self.late = 0
        self.min_seq: int | None = None
        self.max_seq = -1
        self.gaps_ms = array("f")

    def on_rtp(self, sequence_number: int, payload_bytes: int) -> None:
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
            self.got_first.set()
        if self._ext_seq < 0:
            seq, delta = sequence_number, 1
        else:
            delta = (sequence_number - self._ext_seq + 0x8000) % 0x10000 - 0x8000
            seq = self._ext_seq + delta
        if self.recording:
            self.received += 1
            self.payload_bytes += payload_bytes
            self.min_seq = seq if self.min_seq is None else min(self.min_seq, seq)
            self.max_seq = max(self.max_seq, seq)
            if delta > 0 and self._prev_at:
                gap = (now - self._prev_at) * 1000
                self.gaps_ms.append(gap)
                # Late: more than 40 ms after the cadence said, counted from the previous frame's
                # arrival. Frames lost in between count as lost: the hole they leave is not lateness.
                if gap - 20.0 * delta > LATE_MS:
                    self.late += 1
        if delta > 0:
            self._ext_seq = seq
            self._prev_at = now


class LoadCall:
    def __init__(self, base_url: str, headers: dict[str, str], clips: Clips, clock: FrameClock) -> None:
        self.base_url = base_url
        self.headers = headers
        self.clips = clips
        self.clock = clock
        self.outbound: OutboundRtp | None = None
        self.arrivals = Arrivals()
        self.pc: RTCPeerConnection | None = None
        self.session_id = ""
        self.offer_answer_ms = 0.0
        self.first_frame_ms = 0.0
        self._lost_at_start = 0
        self._sent_at_start = 0

    async def connect(self, http: aiohttp.ClientSession) -> None:
        created = time.monotonic()
        async with http.post(f"{self.base_url}/api/v1/sessions", json={}, headers=self.headers) as resp:
            assert resp.status == 201, await resp.text()
            self.session_id = str((await resp.json())["session_id"])
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(IdleTrack())  # negotiates sendrecv audio; the media are sent by self.outbound
        await pc.setLocalDescription(await pc.createOffer())
        tap_inbound_rtp(pc, self.arrivals.on_rtp)  # nothing reaches aiortc's SRTP, jitter buffer or decoder
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        sent = time.monotonic()
        url = f"{self.base_url}/api/v1/sessions/{self.session_id}/offer"
        async with http.post(url, json=offer, headers=self.headers) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
        self.offer_answer_ms = (time.monotonic() - sent) * 1000
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(connected(pc), 20)
        hz = max_playback_of(answer["sdp"])
        self.outbound = OutboundRtp(pc, self.clips[hz if hz in self.clips else None])
        self.clock.add(self.outbound)
        await asyncio.wait_for(self.arrivals.got_first.wait(), 20)
        assert self.arrivals.first_at is not None
        self.first_frame_ms = (self.arrivals.first_at - created) * 1000

    @property
    def sent(self) -> int:
        return self.outbound.sent if self.outbound is not None else 0

    async def _inbound_lost(self) -> int:
        """Packets the server's receiver counted lost (its RTCP receiver reports, cumulative)."""
        assert self.pc is not None
        report = await self.pc.getSenders()[0].getStats()
        return max((s.packetsLost for s in report.values() if s.type == "remote-inbound-rtp"), default=0)

    async def start_window(self) -> None:
        self._lost_at_start = await self._inbound_lost()
        self._sent_at_start = self.sent
        self.arrivals.reset()
        self.arrivals.recording = True

    async def stop_window(self) -> dict[str, object]:
        self.arrivals.recording = False
        a = self.arrivals
        return {
            "sent": self.sent - self._sent_at_start,
            "inbound_lost": await self._inbound_lost() - self._lost_at_start,
            "received": a.received,
            "payload_bytes": a.payload_bytes,
            "late": a.late,
            "outbound_lost": max(0, a.max_seq - a.min_seq + 1 - a.received) if a.min_seq is not None else 0,
            "gaps_ms": [round(g, 2) for g in a.gaps_ms],
        }

    async def hangup(self, http: aiohttp.ClientSession) -> None:
        if self.outbound is not None:
            self.clock.remove(self.outbound)  # before its sockets close
        try:
            url = f"{self.base_url}/api/v1/sessions/{self.session_id}"
            async with http.delete(url, headers=self.headers) as resp:
                await resp.read()
        finally:
            if self.pc is not None:
                await self.pc.close()


def emit(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def run(url: str, token: str, calls: int, mode: str, voice: bool) -> None:
    # Encoded before any call starts, so no call's set-up figure pays for it.
    clips: Clips = {None: clip(mode, voice=voice), 16_000: clip(mode, voice=voice, max_playback_hz=16_000)}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    loop = asyncio.get_running_loop()
    clock = FrameClock()
    async with aiohttp.ClientSession() as http:
        live: list[LoadCall] = []
        failed = 0
        for _ in range(calls):  # one at a time: each set-up figure is one call's own
            call = LoadCall(url, headers, clips, clock)
            try:
                await call.connect(http)
                live.append(call)
            except Exception as exc:  # noqa: BLE001 - a failed call is reported, the others go on
                failed += 1
                print(f"load_client: call failed: {exc!r}", file=sys.stderr)
                if call.outbound is not None:
                    clock.remove(call.outbound)  # it would go on sending into a call nobody measures
        emit({"type": "ready", "failed": failed,
              "setup": [{"offer_answer_ms": c.offer_answer_ms, "first_frame_ms": c.first_frame_ms} for c in live]})  # fmt: skip
        started = time.monotonic()
        while (command := (await loop.run_in_executor(None, sys.stdin.readline)).strip()) != "quit":
            if command == "start":
                started = time.monotonic()
                await asyncio.gather(*(c.start_window() for c in live))
            elif command == "stop":
                seconds = time.monotonic() - started
                stats = await asyncio.gather(*(c.stop_window() for c in live))
                emit({"type": "stats", "seconds": seconds, "calls": stats})
            elif not command:
                break  # the driver went away
        await asyncio.gather(*(c.hangup(http) for c in live), return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="speaking")
    parser.add_argument("--voice", action="store_true", help="speech the cloud fakes transcribe, with room for replies")
    args = parser.parse_args()
    main_coro = run(args.url, args.token, args.calls, args.mode, args.voice)
    try:
        import uvloop  # libuv's loop: less per datagram and per timer than asyncio's own
    except ImportError:
        asyncio.run(main_coro)
    else:
        uvloop.run(main_coro)


if __name__ == "__main__":
    main()
