"""Every reach into aiortc below its public API, in one place, checked once at start.

What the server needs that aiortc does not offer publicly:
- seeing inbound RTP packets before the jitter buffer (the exact microphone meter);
- handing the sender ready-encoded Opus packets (no encoder thread per call);
- sending outbound audio from one shared clock instead of a sender loop per call (media.rtp_send_path);
- decoding inbound audio on the loop as it arrives instead of in a thread per call (media.rtp_receive_path);
- releasing inbound audio packets as they arrive instead of 80 ms later (media.audio_jitter);
- parsing SDP and candidate lines before they reach a peer connection (clear 400s).
`check_aiortc()` refuses to start on an aiortc that no longer has what these rely on, rather
than metering wrongly or failing inside a call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any
from importlib.metadata import version

from aiortc import RTCIceCandidate, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs.opus import OpusEncoder
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription, candidate_from_sdp

from media.audio_jitter import check_audio_jitter
from media.rtp_receive_path import check_receive_path, restore_receiver
from media.rtp_send_path import check_send_path, restore_sender

# The versions these reaches were read from and are tested against (pyproject.toml pins the same).
SUPPORTED = ((1, 14), (1, 16))


class UnsupportedAiortc(RuntimeError):
    """The installed aiortc lacks an internal the server relies on."""


def check_aiortc() -> None:
    """Raise UnsupportedAiortc naming what is missing; cheap, call once at start."""
    found = version("aiortc")
    major_minor = tuple(int(part) for part in found.split(".")[:2])
    if not SUPPORTED[0] <= major_minor <= SUPPORTED[1]:
        raise UnsupportedAiortc(
            f"aiortc {found} is not supported (need {SUPPORTED[0][0]}.{SUPPORTED[0][1]}"
            f" to {SUPPORTED[1][0]}.{SUPPORTED[1][1]}.x)"
        )
    problems = []
    handler = getattr(RTCRtpReceiver, "_handle_rtp_packet", None)
    if handler is None or list(inspect.signature(handler).parameters) != ["self", "packet", "arrival_time_ms"]:
        problems.append("RTCRtpReceiver._handle_rtp_packet(packet, arrival_time_ms)")
    next_frame = getattr(RTCRtpSender, "_next_encoded_frame", None)
    if next_frame is None or ".pack(" not in inspect.getsource(next_frame):
        problems.append("RTCRtpSender._next_encoded_frame packing pre-encoded packets")
    if not callable(getattr(OpusEncoder, "pack", None)):
        problems.append("OpusEncoder.pack(packet)")
    problems += check_send_path() + check_receive_path() + check_audio_jitter()
    if problems:
        raise UnsupportedAiortc(f"aiortc {found} lacks what the server relies on: {'; '.join(problems)}")


def tap_inbound_rtp(receiver: RTCRtpReceiver, on_packet: Callable[[RtpPacket], None]) -> None:
    """Call `on_packet` for every RTP packet the receiver gets, before its jitter buffer.

    aiortc's DTLS transport hands each of the receiver's packets to `_handle_rtp_packet`; the last
    packets of a stream stay in the jitter buffer when it stops, so decoded frames under-count.
    """
    handle = receiver._handle_rtp_packet

    def observed(packet: RtpPacket, arrival_time_ms: int) -> Coroutine[Any, Any, None]:
        # A plain function handing back the handler's coroutine: the transport awaits that one, so no
        # coroutine of our own is made and stepped for every packet.
        on_packet(packet)
        return handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = observed  # type: ignore[method-assign]


def untap_inbound_rtp(receiver: RTCRtpReceiver) -> None:
    """Undo tap_inbound_rtp once the peer connection is closed: the wrapper holds the call alive."""
    receiver.__dict__.pop("_handle_rtp_packet", None)


def release_transports(pc: RTCPeerConnection) -> None:
    """Drop what a closed peer connection's transports still hold: aiortc's DTLS transport never clears
    its own listeners, which tie the peer connection (and the call) into a cycle only a full collection frees."""
    for transceiver in pc.getTransceivers():
        untap_inbound_rtp(transceiver.receiver)
        restore_receiver(transceiver.receiver)
        restore_sender(transceiver.sender)
        for transport in {transceiver.sender.transport, transceiver.receiver.transport}:
            if transport is not None:
                transport.remove_all_listeners()


def parse_sdp(sdp: str) -> SessionDescription:
    """aiortc's own SDP parser, which raises assorted exceptions on bad input."""
    return SessionDescription.parse(sdp)


def parse_candidate_line(line: str) -> RTCIceCandidate:
    """One `candidate:` attribute value as aiortc's object (raises on garbage)."""
    return candidate_from_sdp(line)
