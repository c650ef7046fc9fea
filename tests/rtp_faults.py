"""Faults on a test client's outgoing RTP: packet loss, and Opus DTX as it looks on the wire."""

from __future__ import annotations

import random
from collections.abc import Callable

from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket, is_rtcp

# A WebRTC sender with DTX on sends one packet every 400 ms of silence instead of one every 20 ms.
DTX_KEEP_EVERY = 20


def filter_outgoing_rtp(pc: RTCPeerConnection, keep: Callable[[RtpPacket], bool]) -> dict[str, int]:
    """Drop the client's outgoing RTP packets for which `keep` is false (RTCP always passes)."""
    counts = {"sent": 0, "dropped": 0}
    transport = pc.getSenders()[0].transport
    send = transport._send_rtp

    async def filtered(data: bytes) -> None:
        if not is_rtcp(data):
            if not keep(RtpPacket.parse(data)):
                counts["dropped"] += 1
                return
            counts["sent"] += 1
        await send(data)

    transport._send_rtp = filtered  # type: ignore[method-assign]
    return counts


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
