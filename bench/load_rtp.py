"""The load generator's media path, below aiortc: RTP sent by hand from one clock, received unread.

aiortc sets each call up (ICE, DTLS, SRTP keys); after that, per packet, its send path costs a task
step, a packetizer and several coroutines, and its receive path a STUN parse attempt, a queue, a task
step, an SRTP unprotect and an RTP parse: on one load core that caps the calls one generator drives.
Here instead:
- `IdleTrack` keeps the sendrecv transceiver negotiated while aiortc's sender loop sends nothing;
- `OutboundRtp` builds each packet itself (12-byte header with the sender's SSRC, pre-encoded Opus
  payload), protects it with the DTLS transport's own SRTP session and writes it to the nominated ICE
  pair's socket; `FrameClock` sends one for every call each 20 ms. No header extensions: aiortc's
  sender wrote only the mid (audio negotiates mid and audio level), and the server routes inbound RTP
  by SSRC and payload type (aiortc's RtpRouter never reads the mid), reading no extension itself;
- `tap_inbound_rtp` takes RTP off the ICE sockets before aioice sees it: SRTP leaves the RTP header in
  the clear, so the sequence number and payload size are read without unprotecting or decoding.
  STUN, DTLS and SRTCP take aiortc's usual path (ICE consent, the server's receiver reports).
"""

from __future__ import annotations

import asyncio
import random
import struct
import sys
from collections.abc import Callable
from typing import Any

from aioice.ice import StunProtocol
from aiortc import RTCPeerConnection
from aiortc.clock import current_ntp_time
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bench.load_audio import FRAME  # samples in 20 ms on Opus's 48 kHz RTP clock

FRAME_S = 0.02
_HEADER = struct.Struct("!BBHLL")  # V=2 P=0 X=0 CC=0 | M PT | sequence | timestamp | SSRC
_RTP_VERSION_2 = 0x80
_MARKER = 0x80
# SRTP's authentication tag after the payload, by DTLS-SRTP profile (aiortc offers all three).
_SRTP_TAG_BYTES = {b"SRTP_AES128_CM_SHA1_80": 10, b"SRTP_AEAD_AES_128_GCM": 16, b"SRTP_AEAD_AES_256_GCM": 16}

OnRtp = Callable[[int, int], None]  # (sequence number, payload bytes)


class IdleTrack(MediaStreamTrack):
    """An audio track that never yields a frame: aiortc's sender waits on it, and sends no media."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._ended = asyncio.Event()

    async def recv(self) -> Any:
        await self._ended.wait()
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._ended.set()


async def connected(pc: RTCPeerConnection) -> None:
    """Wait for ICE and DTLS (setRemoteDescription only starts them): the SRTP keys and the nominated
    pair exist from then on."""
    done = asyncio.get_running_loop().create_future()

    def check() -> None:
        if done.done():
            return
        if pc.connectionState == "connected":
            done.set_result(None)
        elif pc.connectionState in ("failed", "closed"):
            done.set_exception(ConnectionError(f"peer connection {pc.connectionState}"))

    pc.on("connectionstatechange", check)
    try:
        check()
        await done
    finally:
        pc.remove_listener("connectionstatechange", check)


class OutboundRtp:
    """One call's RTP stream, packet by packet as FrameClock asks, looping over a clip's Opus payloads."""

    def __init__(self, pc: RTCPeerConnection, packets: list[bytes]) -> None:
        transceiver = pc.getTransceivers()[0]
        self._sender = sender = transceiver.sender
        dtls = sender.transport
        assert dtls._tx_srtp is not None, "DTLS is not connected (await connected(pc) first)"
        pair = dtls.transport._connection._nominated[1]  # component 1: RTP and RTCP are muxed
        self._protect = dtls._tx_srtp.protect
        self._sendto = pair.protocol.transport.sendto
        self._addr = pair.remote_addr
        self._payload_type = transceiver._codecs[0].payloadType  # the negotiated codec: Opus
        # The server's receiver reports are about this SSRC, and aiortc's sender matches them by it.
        self._ssrc: int = sender._ssrc
        self._second_byte = _MARKER | self._payload_type  # marker on the first packet of the talkspurt
        self._sequence = random.randrange(0x10000)
        self._timestamp = random.randrange(0x100000000)
        self._packets = packets
        self._next = random.randrange(len(packets))  # calls do not all speak in step
        self._octets = 0
        self.sent = 0

    def send(self, ntp: int) -> None:
        payload = self._packets[self._next]
        header = _HEADER.pack(_RTP_VERSION_2, self._second_byte, self._sequence, self._timestamp, self._ssrc)
        self._sendto(self._protect(header + payload), self._addr)
        self._second_byte = self._payload_type
        self._next = (self._next + 1) % len(self._packets)
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + FRAME) & 0xFFFFFFFF
        self.sent += 1
        self._octets += len(payload)
        # What aiortc's loop keeps for its RTCP sender reports, so they describe this stream.
        sender = self._sender
        sender._RTCRtpSender__packet_count = self.sent  # type: ignore[attr-defined]
        sender._RTCRtpSender__octet_count = self._octets  # type: ignore[attr-defined]
        sender._RTCRtpSender__ntp_timestamp = ntp  # type: ignore[attr-defined]
        sender._RTCRtpSender__rtp_timestamp = self._timestamp  # type: ignore[attr-defined]


class FrameClock:
    """One timer for every call in the process, on an absolute schedule (no drift); a late tick is
    followed by the ones it owes at once, as a track pacing itself would catch up.

    The calls are spread over SLOTS phases of the 20 ms period (a tick every 20/SLOTS ms sends one
    phase's packets), so the server does not get every call's packet in one burst: browsers' packets
    arrive at independent moments.
    """

    SLOTS = 4

    def __init__(self) -> None:
        self._slots: list[list[OutboundRtp]] = [[] for _ in range(self.SLOTS)]
        self._origin = 0.0
        self._ticks = 0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def _count(self) -> int:
        return sum(len(slot) for slot in self._slots)

    def add(self, stream: OutboundRtp) -> None:
        """Send `stream`'s first packet now (as aiortc's sender would), the rest on its phase's ticks."""
        stream.send(current_ntp_time())
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._origin, self._ticks = loop.time(), 0
            self._timer = loop.call_at(self._origin + FRAME_S / self.SLOTS, self._tick)
        # The phase after the current tick's, so the second packet follows the first by ~20 ms.
        self._slots[self._ticks % self.SLOTS].append(stream)

    def remove(self, stream: OutboundRtp) -> None:
        for slot in self._slots:
            if stream in slot:
                slot.remove(stream)
        if not self._count and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._ticks += 1
        ntp = current_ntp_time()
        slot = self._slots[self._ticks % self.SLOTS]
        for stream in list(slot):
            try:
                stream.send(ntp)
            except Exception as exc:  # noqa: BLE001 - a call whose socket went away stops, the others go on
                print(f"load_rtp: a call stopped sending: {exc!r}", file=sys.stderr)
                slot.remove(stream)
        loop = asyncio.get_running_loop()
        next_at = self._origin + (self._ticks + 1) * FRAME_S / self.SLOTS
        self._timer = loop.call_at(next_at, self._tick) if self._count else None


def tap_inbound_rtp(pc: RTCPeerConnection, on_rtp: OnRtp) -> None:
    """Hand `on_rtp` each inbound RTP packet's sequence number and payload size, instead of aiortc.

    Call after setLocalDescription (the ICE sockets exist then), before the server can send.
    """
    dtls = pc.getTransceivers()[0].receiver.transport
    protocols = dtls.transport._connection._protocols
    assert protocols, "no ICE sockets yet"
    tag: int | None = None  # SRTP tag size, known once DTLS has negotiated the profile

    def tap(usual: Callable[[bytes, Any], None]) -> Callable[[bytes, Any], None]:
        def datagram_received(data: bytes, addr: Any) -> None:
            nonlocal tag
            # RTP: version 2 (first byte 128..191); RTCP's packet types put its second byte in 192..208.
            if len(data) < 12 or not 127 < data[0] < 192 or 191 < data[1] < 209:
                usual(data, addr)
                return
            if tag is None:
                if dtls._rx_srtp is None:
                    return  # before DTLS is done aiortc drops SRTP too
                tag = _SRTP_TAG_BYTES[dtls._ssl.get_selected_srtp_profile()]
            first = data[0]
            header = 12 + 4 * (first & 0x0F)  # fixed header and CSRCs (padding is encrypted: never counted)
            if first & 0x10:  # a header extension (the server's mid): 4 bytes and its 32-bit words
                header += 4 + 4 * ((data[header + 2] << 8) | data[header + 3])
            on_rtp((data[2] << 8) | data[3], len(data) - header - tag)

        return datagram_received

    for protocol in protocols:
        if type(protocol) is StunProtocol:
            protocol.datagram_received = tap(protocol.datagram_received)  # type: ignore[method-assign]
