"""Outbound audio sent from the shared frame clock (media.rtp_send_path) is the RTP aiortc would send.

The same track content goes out once through aiortc's own sender loop and once from the clock, over
real sockets; the RTP handed to SRTP must match packet for packet: payload type, marker, SSRC
continuity, sequence numbers and timestamps advancing by one frame every frame (silence included),
the same header extensions and the same payloads. The RTCP sender reports count what was sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.rtp import RtcpPacket, RtcpSrPacket, RtpPacket

from media import rtp_send_path
from media.aiortc_internals import UnsupportedAiortc, check_aiortc, release_transports
from media.frame_clock import frame_clock
from media.outbound_audio import FRAME_SAMPLES, PacedAudioTrack
from media.rtp_send_path import send_from_clock
from tests.speech import utterance

pytestmark = pytest.mark.asyncio(loop_scope="session")


@dataclass
class RecordingSrtp:
    """Wraps the sender's SRTP session: keeps every RTP and RTCP packet as it was before protection."""

    session: object
    rtp: list[bytes] = field(default_factory=list)
    rtcp: list[bytes] = field(default_factory=list)

    def protect(self, data: bytes) -> bytes:
        self.rtp.append(data)
        return self.session.protect(data)  # type: ignore[attr-defined]

    def protect_rtcp(self, data: bytes) -> bytes:
        self.rtcp.append(data)
        return self.session.protect_rtcp(data)  # type: ignore[attr-defined]


def record_srtp(sender: RTCRtpSender) -> RecordingSrtp:
    dtls = sender.transport
    recording = RecordingSrtp(session=None)
    setup = dtls._setup_srtp

    def setup_and_record() -> None:
        setup()
        recording.session = dtls._tx_srtp
        dtls._tx_srtp = recording  # type: ignore[assignment]

    dtls._setup_srtp = setup_and_record  # type: ignore[method-assign]
    return recording


@dataclass
class Sent:
    recording: RecordingSrtp
    packet_count: int
    octet_count: int
    track: PacedAudioTrack
    resent: bool = False


async def send_once(samples: np.ndarray, *, from_clock: bool, seconds: float = 2.5) -> Sent:
    track = PacedAudioTrack()
    track.push(samples)
    sender_pc, receiver_pc = RTCPeerConnection(), RTCPeerConnection()
    sender = sender_pc.addTrack(track)
    if from_clock:
        send_from_clock(sender, track)
    recording = record_srtp(sender)
    receiver_pc.addTransceiver("audio", direction="recvonly")
    try:
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        await asyncio.sleep(seconds)
        # Read together, with nothing in between: the sender's own counters against what left.
        sent = Sent(recording, sender._RTCRtpSender__packet_count, sender._RTCRtpSender__octet_count, track)  # type: ignore[attr-defined]
        # A NACKed packet goes out again exactly as it first did (from aiortc's history).
        resend = list(recording.rtp[-20:-10])
        for original in resend:
            await sender._retransmit(RtpPacket.parse(original).sequence_number)
        sent.resent = recording.rtp[-len(resend) :] == resend and len(resend) == 10
        sent.recording = RecordingSrtp(None, recording.rtp[: sent.packet_count], recording.rtcp)
    finally:
        await sender_pc.close()
        await receiver_pc.close()
        release_transports(sender_pc)
    assert track.readyState == "ended" and sender._RTCRtpSender__rtp_exited.is_set()  # type: ignore[attr-defined]
    assert "_run_rtp" not in vars(sender)
    return sent


def header_extension(data: bytes) -> bytes:
    packet = RtpPacket.parse(data)
    return data[12 : len(data) - len(packet.payload)]


async def test_clocked_rtp_is_aiortcs_rtp_packet_for_packet() -> None:
    # A second of speech, then silence: the encoder settles and silent frames reuse its packet.
    speech = utterance("One, two, three, four, five.")[:48_000]
    stock = await send_once(speech, from_clock=False)
    clocked = await send_once(speech, from_clock=True)
    assert clocked.track._encoder is None  # freed when the track stopped
    streams = []
    for run in (stock, clocked):
        packets = [RtpPacket.parse(d) for d in run.recording.rtp]
        assert len(packets) > 100
        first = packets[0]
        assert {p.ssrc for p in packets} == {first.ssrc} and {p.payload_type for p in packets} == {first.payload_type}
        assert all(p.marker == 1 for p in packets)
        assert [(p.sequence_number - first.sequence_number) % 65536 for p in packets] == list(range(len(packets)))
        assert [(p.timestamp - first.timestamp) % 2**32 for p in packets] == [i * FRAME_SAMPLES for i in range(len(packets))]
        # The sender's counters, which its RTCP sender reports carry, are exactly what left.
        assert run.packet_count == len(packets) and run.octet_count == sum(len(p.payload) for p in packets)
        assert run.resent
        reports = [r for d in run.recording.rtcp for r in RtcpPacket.parse(d) if isinstance(r, RtcpSrPacket)]
        assert reports and all(r.ssrc == first.ssrc for r in reports)
        assert {r.sender_info.rtp_timestamp for r in reports} <= {p.timestamp for p in packets}
        streams.append(([header_extension(d) for d in run.recording.rtp], [p.payload for p in packets]))
    count = min(len(stock.recording.rtp), len(clocked.recording.rtp))
    (stock_ext, stock_payloads), (clocked_ext, clocked_payloads) = streams
    assert clocked_ext[:count] == stock_ext[:count] and len(set(clocked_ext)) == 1
    assert clocked_payloads[:count] == stock_payloads[:count]
    assert clocked.track._encoder is None and clocked.track.frames_sent >= count
    # The silent tail reused the settled packet instead of running libopus.
    assert len(set(clocked_payloads[60:count])) < 10


@pytest.mark.parametrize("how", ["track-stopped", "listener-fails"])
async def test_a_stream_that_ends_leaves_the_clock_and_lets_the_sender_stop(how: str) -> None:
    track = PacedAudioTrack()
    sender_pc, receiver_pc = RTCPeerConnection(), RTCPeerConnection()
    sender = sender_pc.addTrack(track)
    send_from_clock(sender, track)
    receiver_pc.addTransceiver("audio", direction="recvonly")
    clock = frame_clock()
    streams_before = len(clock)
    try:
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        for _ in range(100):
            if track.frames_sent > 10:
                break
            await asyncio.sleep(0.05)
        assert len(clock) == streams_before + 1
        if how == "track-stopped":
            track.stop()
        else:  # anything unexpected ends the stream, as it ends aiortc's loop (with a warning)
            track.sent_listeners.append(lambda samples: 1 / 0)
        await asyncio.wait_for(sender._RTCRtpSender__rtp_exited.wait(), 2)  # type: ignore[attr-defined]
        assert len(clock) == streams_before and sender.track is None and track.readyState == "ended"
        await asyncio.wait_for(sender.stop(), 2)
    finally:
        await sender_pc.close()
        await receiver_pc.close()
        release_transports(sender_pc)


async def test_an_aiortc_whose_sender_loop_changed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def other_loop(self, codec, extra):  # type: ignore[no-untyped-def]
        pass

    monkeypatch.setattr(RTCRtpSender, "_run_rtp", other_loop)
    with pytest.raises(UnsupportedAiortc, match="_run_rtp"):
        check_aiortc()
    monkeypatch.undo()
    monkeypatch.setattr(rtp_send_path, "_SENDER_ATTRIBUTES", ("__no_such_counter",))
    with pytest.raises(UnsupportedAiortc, match="__no_such_counter"):
        check_aiortc()

