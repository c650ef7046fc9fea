"""Seeing inbound RTP packets as they arrive, before aiortc's jitter buffer and decoder.

aiortc's DTLS transport hands every RTP packet of a receiver to `receiver._handle_rtp_packet`.
Wrapping that one bound method is how the inbound meter counts what really arrived: decoded frames
under-count, because the last packets of a stream stay in the jitter buffer when it stops.
The metering tests over real WebRTC fail if aiortc ever routes packets differently.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc import RTCRtpReceiver
from aiortc.rtp import RtpPacket


def tap_inbound_rtp(receiver: RTCRtpReceiver, on_packet: Callable[[RtpPacket], None]) -> None:
    handle = receiver._handle_rtp_packet

    async def observed(packet: RtpPacket, arrival_time_ms: int) -> None:
        on_packet(packet)
        await handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = observed  # type: ignore[method-assign]
