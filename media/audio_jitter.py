"""Reordering inbound audio packets without holding back the ones that arrive in order.

aiortc's receiver keeps audio in a jitter buffer that releases a frame only once four later ones are
complete (80 ms of delay on every packet, every call), and that after a lost packet waits until 16
packets have piled up behind the gap, then keeps releasing one frame per packet, so the delay stays.
A voice agent hears the end of a turn and a barge-in that much later.

Opus puts one whole frame in each packet, so a packet that is the next one expected can be decoded
the moment it arrives. One that skips ahead is held until the missing one comes (reordered) or
MAX_HOLD packets are waiting behind the gap (lost: it is skipped), then everything that is ready is
released together, in order. Late or repeated packets are dropped. In-order audio waits for nothing.
"""

from __future__ import annotations

import weakref

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

from media.rtp_receive_path import source_of

MAX_HOLD = 3  # packets (60 ms) waited behind a gap before its missing packet is taken for lost
_HALF = 1 << 15


def _after(a: int, b: int) -> int:
    """How far sequence number `a` is after `b` (negative if before), across the 16-bit wrap."""
    return (a - b + _HALF) % (1 << 16) - _HALF


class AudioJitterBuffer:
    def __init__(self) -> None:
        self._expected: int | None = None  # the next sequence number to release
        self._held: dict[int, RtpPacket] = {}
        self.lost = 0  # packets given up for lost
        self.late = 0  # packets dropped for arriving after their turn (or twice)

    def push(self, packet: RtpPacket) -> list[JitterFrame]:
        """The frames this packet makes ready, in order (usually just its own)."""
        seq = packet.sequence_number
        if self._expected is None:
            self._expected = seq
        ahead = _after(seq, self._expected)
        if ahead < 0 or seq in self._held:
            self.late += 1
            return []
        if ahead >= 1 << 14:  # a jump this far is a new stream position, not a gap to wait out
            self._held.clear()
            self._expected = seq
            ahead = 0
        if ahead == 0 and not self._held:
            self._expected = (seq + 1) & 0xFFFF
            return [_frame(packet)]
        self._held[seq] = packet
        if self._expected not in self._held and len(self._held) > MAX_HOLD:
            # The missing packet is lost: go on from the first one held.
            first = min(self._held, key=lambda held: _after(held, self._expected or 0))
            self.lost += _after(first, self._expected)
            self._expected = first
        return self._release()

    def _release(self) -> list[JitterFrame]:
        ready = []
        while self._expected is not None and self._expected in self._held:
            ready.append(_frame(self._held.pop(self._expected)))
            self._expected = (self._expected + 1) & 0xFFFF
        return ready


def _frame(packet: RtpPacket) -> JitterFrame:
    # `_data`: the payload as the receiver depacketised it (for Opus, the payload itself).
    return JitterFrame(data=getattr(packet, "_data", packet.payload), timestamp=packet.timestamp)


class PromptJitterAdapter:
    """Takes the place of a receiver's audio jitter buffer: each packet's ready frames go to the
    receiver's decoder at once, with the receiver's own codec and timestamp mapping, and the receiver
    is told no frame is ready (so it queues nothing itself)."""

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self._receiver = weakref.ref(receiver)  # the receiver holds this: no cycle to wait on the collector
        self.buffer = AudioJitterBuffer()

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        receiver = self._receiver()
        frames = self.buffer.push(packet)
        if receiver is None:
            return False, None
        codec = receiver._RTCRtpReceiver__codecs.get(packet.payload_type)  # type: ignore[attr-defined]
        if not frames or codec is None or not receiver._RTCRtpReceiver__decoder_thread:  # type: ignore[attr-defined]
            return False, None
        mapper = receiver._RTCRtpReceiver__timestamp_mapper  # type: ignore[attr-defined]
        queue = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
        for frame in frames:
            if frame.data:  # a padding-only packet carries no audio
                frame.timestamp = mapper.map(frame.timestamp)
                queue.put((codec, frame))
        return False, None


def check_audio_jitter() -> list[str]:
    """What use_prompt_jitter_buffer needs from aiortc but does not find (empty when all is there)."""
    init, handler = (source_of(RTCRtpReceiver, name) for name in ("__init__", "_handle_rtp_packet"))
    problems = []
    if "self.__jitter_buffer = JitterBuffer(capacity=16, prefetch=4)" not in init:
        problems.append("RTCRtpReceiver.__jitter_buffer for audio")
    for needed in ("pli_flag, encoded_frame = self.__jitter_buffer.add(packet)", "packet._data = depayload(",
                   "self.__timestamp_mapper.map(", "self.__decoder_queue.put((codec, encoded_frame))",
                   "codec = self.__codecs.get(packet.payload_type)"):  # fmt: skip
        if needed not in handler:
            problems.append(f"RTCRtpReceiver._handle_rtp_packet: {needed}")
    return problems


def use_prompt_jitter_buffer(receiver: RTCRtpReceiver) -> PromptJitterAdapter:
    """Give an audio receiver the prompt buffer instead of aiortc's (before any packet arrives)."""
    adapter = PromptJitterAdapter(receiver)
    receiver._RTCRtpReceiver__jitter_buffer = adapter  # type: ignore[attr-defined]
    return adapter

