"""Outbound audio sent from the shared frame clock, below aiortc's RTCRtpSender loop.

aiortc's sender runs a coroutine per track (`_run_rtp`) that awaits the track for every frame and
then awaits three more coroutines down to `sendto`: per frame per call a timer, a task step and a
handful of coroutine frames. Here the sender's `_run_rtp` is replaced, per sender, by one that
registers the call with media.frame_clock and waits for the end; each tick builds the very packet
aiortc would (same payload type, sequence, timestamp, marker, header extensions, history for NACKs,
RTCP sender-report counters), protects it with the DTLS transport's SRTP session and hands it to
the nominated ICE pair's socket, all in one plain function call.

When anything it relies on is not there (no selected pair yet, a protocol other than aioice's own
StunProtocol), the sender runs aiortc's own loop instead, and the track paces itself.
`check_send_path()` lists what is missing from an aiortc this was not written against.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import struct
import time
import traceback
from collections.abc import Callable

from aioice.ice import StunProtocol
from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket
from aiortc.utils import random32

from media.frame_clock import FrameClock, frame_clock
from media.outbound_audio import FRAME_SAMPLES, PacedAudioTrack
from media.rtp_receive_path import NTP_UNIX_OFFSET_S

log = logging.getLogger(__name__)

_SEQUENCE_TIMESTAMP = struct.Struct("!HL")

# Attributes of aiortc objects this module reads or writes, by where aiortc sets them up.
_SENDER_ATTRIBUTES = (
    "__rtp_started", "__rtp_exited", "__rtp_history", "__rtp_header_extensions_map", "__mid", "__track",
    "__encoder", "__ntp_timestamp", "__rtp_timestamp", "__octet_count", "__packet_count",
)  # fmt: skip
_DTLS_ATTRIBUTES = ("_tx_srtp", "_state", "__tx_bytes", "__tx_packets")


def check_send_path() -> list[str]:
    """What this module needs from aiortc and aioice but does not find (empty when all is there)."""
    problems = []
    run_rtp = getattr(RTCRtpSender, "_run_rtp", None)
    if run_rtp is None or list(inspect.signature(run_rtp).parameters) != ["self", "codec"]:
        problems.append("RTCRtpSender._run_rtp(codec)")
    else:
        source = inspect.getsource(RTCRtpSender)
        loop_source = inspect.getsource(run_rtp)
        problems += [f"RTCRtpSender.{name}" for name in _SENDER_ATTRIBUTES if not _assigned(source, name)]
        if "packet.marker = (i == len(enc_frame.payloads) - 1)" not in loop_source:
            problems.append("RTCRtpSender._run_rtp marking each frame's last packet")
    dtls_source = inspect.getsource(RTCDtlsTransport)
    problems += [f"RTCDtlsTransport.{name}" for name in _DTLS_ATTRIBUTES if not _assigned(dtls_source, name)]
    send_data = getattr(StunProtocol, "send_data", None)
    if send_data is None or "self.transport.sendto(data, addr)" not in inspect.getsource(send_data):
        problems.append("aioice StunProtocol.send_data(data, addr) -> transport.sendto")
    return problems


def _assigned(source: str, name: str) -> bool:
    """Whether a class's source assigns `self.<name>` (annotated or not)."""
    return re.search(rf"self\.{re.escape(name)}\b(: [^=\n]+)? = ", source) is not None


def send_from_clock(sender: RTCRtpSender, track: PacedAudioTrack) -> None:
    """Have `sender` send `track` from the shared frame clock once aiortc starts it (before `send`)."""

    async def run_rtp(codec: RTCRtpCodecParameters) -> None:
        stream = ClockedRtpStream.start(sender, track, codec, frame_clock())
        if stream is None:
            await RTCRtpSender._run_rtp(sender, codec)
            return
        await stream.run()

    sender._run_rtp = run_rtp  # type: ignore[method-assign]


def restore_sender(sender: RTCRtpSender) -> None:
    """Drop the per-sender override (it holds the track and the call alive)."""
    sender.__dict__.pop("_run_rtp", None)


class ClockedRtpStream:
    """One sender's RTP stream, a packet per clock tick; `run` is the sender's RTP task until it ends."""

    def __init__(self, sender: RTCRtpSender, track: PacedAudioTrack, codec: RTCRtpCodecParameters, clock: FrameClock) -> None:
        self._sender = sender
        self._track = track
        self._clock = clock
        self._payload_type = codec.payloadType
        dtls = sender.transport
        self._dtls = dtls
        self._srtp = dtls._tx_srtp
        self._nominated = dtls.transport._connection._nominated
        self._history: dict[int, RtpPacket] = sender._RTCRtpSender__rtp_history  # type: ignore[attr-defined]
        self._map = sender._RTCRtpSender__rtp_header_extensions_map  # type: ignore[attr-defined]
        self._mid = sender._RTCRtpSender__mid  # type: ignore[attr-defined]
        # What aiortc's loop keeps in locals.
        self._sequence_number = random_sequence_number()
        self._timestamp_origin = random32()
        self._ended = asyncio.get_running_loop().create_future()
        self._clock_id: int | None = None
        # Without a time-stamping header extension negotiated (abs-send-time is video's), every header is
        # the same bytes but for sequence and timestamp: packets are made from that template, and the
        # NACK history keeps what it needs to make aiortc's RtpPacket again should one be asked for.
        early, late = self._packet(0, 0, b"", 0).serialize(self._map), self._packet(0, 0, b"", 0xFFFFFF).serialize(self._map)
        self._template: tuple[bytes, bytes] | None = (early[:2], early[8:]) if early == late else None
        if self._template is not None:
            self._history = _History(self._packet)
            sender._RTCRtpSender__rtp_history = self._history  # type: ignore[attr-defined]

    def _packet(self, sequence_number: int, timestamp: int, payload: bytes, abs_send_time: int | None) -> RtpPacket:
        """The packet aiortc's loop would make."""
        packet = RtpPacket(payload_type=self._payload_type, sequence_number=sequence_number, timestamp=timestamp)
        packet.ssrc = self._sender._ssrc
        packet.payload = payload
        packet.marker = 1  # one payload per frame: the frame's last packet
        packet.extensions.abs_send_time = abs_send_time
        packet.extensions.mid = self._mid
        return packet

    @classmethod
    def start(cls, sender: RTCRtpSender, track: PacedAudioTrack, codec: RTCRtpCodecParameters, clock: FrameClock) -> ClockedRtpStream | None:
        """The stream for a sender aiortc is starting, or None when it must run aiortc's own loop."""
        dtls = sender.transport
        if sender.track is not track or dtls._tx_srtp is None:
            return None
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None or type(pair.protocol) is not StunProtocol:
            return None
        return cls(sender, track, codec, clock)

    async def run(self) -> None:
        """Mirror of aiortc's `_run_rtp` around the clock's ticks, down to its exit path."""
        sender = self._sender
        sender._RTCRtpSender__rtp_started.set()  # type: ignore[attr-defined]
        try:
            self._clock_id = self._clock.add(self.tick)
            self.tick()  # the first frame now, as aiortc's loop would send it
            await self._ended
        except asyncio.CancelledError:
            pass
        finally:
            try:
                self._end()
                track = sender._RTCRtpSender__track  # type: ignore[attr-defined]
                if track:
                    track.stop()
                    sender._RTCRtpSender__track = None  # type: ignore[attr-defined]
                sender._RTCRtpSender__encoder = None  # type: ignore[attr-defined]
            finally:
                # RTCRtpSender.stop() waits for this: it must be set on every way out.
                sender._RTCRtpSender__rtp_exited.set()  # type: ignore[attr-defined]

    def _end(self) -> None:
        if self._clock_id is not None:
            self._clock.remove(self._clock_id)
        if not self._ended.done():
            self._ended.set_result(None)

    def tick(self) -> None:
        if self._ended.done():
            return
        try:
            if not self._send_next():
                self._end()  # aiortc's loop ends on the transport's ConnectionError
        except MediaStreamError:
            self._end()  # and on the track's end
        except Exception:
            # aiortc's loop logs anything else and ends: so does this stream.
            log.warning("RTCRtpSender(audio) %s", traceback.format_exc())
            self._end()

    def _send_next(self) -> bool:
        track = self._track
        if track.readyState != "live":
            raise MediaStreamError
        pts = track.frames_sent * FRAME_SAMPLES
        payload = track.next_payload()
        sender = self._sender
        if not sender._enabled:
            return True  # read and dropped, as aiortc does
        sequence_number = self._sequence_number
        timestamp = (self._timestamp_origin + pts) & 0xFFFFFFFF
        now = time.time() + NTP_UNIX_OFFSET_S
        ntp = (int(now) << 32) | int((now % 1) * 4_294_967_296)
        if self._template is not None:
            self._history[sequence_number % RTP_HISTORY_SIZE] = (sequence_number, timestamp, payload)  # type: ignore[assignment]
            first, rest = self._template
            data = first + _SEQUENCE_TIMESTAMP.pack(sequence_number, timestamp) + rest + payload
        else:
            packet = self._packet(sequence_number, timestamp, payload, (ntp >> 14) & 0x00FFFFFF)
            self._history[sequence_number % RTP_HISTORY_SIZE] = packet
            data = packet.serialize(self._map)
        if not self._send(data):
            return False
        sender._RTCRtpSender__ntp_timestamp = ntp  # type: ignore[attr-defined]
        sender._RTCRtpSender__rtp_timestamp = timestamp  # type: ignore[attr-defined]
        sender._RTCRtpSender__octet_count += len(payload)  # type: ignore[attr-defined]
        sender._RTCRtpSender__packet_count += 1  # type: ignore[attr-defined]
        self._sequence_number = (self._sequence_number + 1) & 0xFFFF
        return True

    def _send(self, data: bytes) -> bool:
        """RTCDtlsTransport._send_rtp and aioice's Connection.send, without their coroutines."""
        dtls = self._dtls
        if dtls._state is not State.CONNECTED:
            return False
        pair = self._nominated.get(1)
        if pair is None:
            return False
        data = self._srtp.protect(data)
        pair.protocol.transport.sendto(data, pair.remote_addr)
        dtls._RTCDtlsTransport__tx_bytes += len(data)  # type: ignore[attr-defined]
        dtls._RTCDtlsTransport__tx_packets += 1  # type: ignore[attr-defined]
        return True


class _History(dict):  # type: ignore[type-arg]
    """aiortc's NACK history, holding (sequence, timestamp, payload) and giving back its RtpPacket."""

    def __init__(self, make: Callable[[int, int, bytes, int | None], RtpPacket]) -> None:
        super().__init__()
        self._make = make

    def get(self, key: int, default: object = None) -> object:
        kept = super().get(key, default)
        return self._make(*kept, None) if isinstance(kept, tuple) else kept
