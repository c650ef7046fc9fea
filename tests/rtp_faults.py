"""Faults on a test client's outgoing RTP: packet loss, Opus DTX as it looks on the wire, forged timestamps."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket, is_rtcp

# A WebRTC sender with DTX on sends one packet every 400 ms of silence instead of one every 20 ms.
DTX_KEEP_EVERY = 20


@dataclass
class RtpCounts:
    sent: int = 0
    dropped: int = 0
    first_sent_at: float | None = None  # loop time of the first RTP packet that left
    last_sent_at: float | None = None


def rewrite_outgoing_rtp(pc: RTCPeerConnection, rewrite: Callable[[bytes], bytes | None]) -> RtpCounts:
    """Pass each of the client's outgoing RTP packets (before SRTP) through `rewrite`: None drops it.

    RTCP always passes untouched.
    """
    counts = RtpCounts()
    transport = pc.getSenders()[0].transport
    send = transport._send_rtp

    async def rewritten(data: bytes) -> None:
        if not is_rtcp(data):
            changed = rewrite(data)
            if changed is None:
                counts.dropped += 1
                return
            data = changed
            counts.sent += 1
            now = asyncio.get_running_loop().time()
            counts.first_sent_at = now if counts.first_sent_at is None else counts.first_sent_at
            counts.last_sent_at = now
        await send(data)

    transport._send_rtp = rewritten  # type: ignore[method-assign]
    return counts


def filter_outgoing_rtp(pc: RTCPeerConnection, keep: Callable[[RtpPacket], bool]) -> RtpCounts:
    """Drop the client's outgoing RTP packets for which `keep` is false (RTCP always passes)."""
    return rewrite_outgoing_rtp(pc, lambda data: data if keep(RtpPacket.parse(data)) else None)


def random_loss(rate: float, seed: int = 1) -> Callable[[RtpPacket], bool]:
    rng = random.Random(seed)
    return lambda packet: rng.random() >= rate


def opus_dtx() -> Callable[[RtpPacket], bool]:
    """Silence packets (a few bytes) are held back but for one in every DTX_KEEP_EVERY."""
    silent_run = 0

    def keep(packet: RtpPacket) -> bool:
        nonlocal silent_run
        if len(packet.payload) > 8:
            silent_run = 0
            return True
        silent_run += 1
        return silent_run % DTX_KEEP_EVERY == 1

    return keep


def jumping_timestamps(offsets: dict[int, int]) -> Callable[[bytes], bytes | None]:
    """Add an offset (in RTP clock units, wrapping) to every packet's timestamp: from the packet numbered
    by each key on, its value; so {50: x, 51: 0} forges one packet and {50: x} shifts all that follow."""
    packet_index = 0
    offset = 0

    def rewrite(data: bytes) -> bytes:
        nonlocal packet_index, offset
        offset = offsets.get(packet_index, offset)
        packet_index += 1
        timestamp = (int.from_bytes(data[4:8], "big") + offset) % (1 << 32)
        return data[:4] + timestamp.to_bytes(4, "big") + data[8:]

    return rewrite
