"""The prompt audio jitter buffer: in-order packets out at once, reordering undone, losses skipped,
and the same decoded audio as aiortc's own buffer gives for the same packets."""

from __future__ import annotations

import fractions

import av
import numpy as np
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from media.audio_jitter import MAX_HOLD, AudioJitterBuffer, check_audio_jitter

RATE = 48_000
FRAME = 960


def packets(count: int, first_seq: int = 1000) -> list[RtpPacket]:
    """`count` RTP packets of Opus-coded speech-like audio, 20 ms apart, sequence numbers from `first_seq`."""
    encoder = OpusEncoder()
    rng = np.random.default_rng(5)
    out = []
    for index in range(count):
        tone = 6000 * np.sin(2 * np.pi * (200 + 40 * (index % 7)) * (np.arange(FRAME) + index * FRAME) / RATE)
        samples = (tone + rng.normal(0, 300, FRAME)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, index * FRAME, fractions.Fraction(1, RATE)
        payloads, timestamp = encoder.encode(frame)
        packet = RtpPacket(payload_type=111, sequence_number=(first_seq + index) & 0xFFFF, timestamp=timestamp + 5000, ssrc=1)
        packet.payload = payloads[0]
        packet._data = payloads[0]  # type: ignore[attr-defined]  # as the receiver depacketises it
        out.append(packet)
    return out


def through_aiortc(stream: list[RtpPacket]) -> list[JitterFrame]:
    buffer = JitterBuffer(capacity=16, prefetch=4)  # what aiortc's receiver uses for audio
    frames = []
    for packet in stream:
        _, frame = buffer.add(packet)
        if frame is not None:
            frames.append(frame)
    return frames


def through_ours(stream: list[RtpPacket]) -> tuple[list[JitterFrame], list[int]]:
    """Frames released, and for each packet pushed how many frames it released."""
    buffer = AudioJitterBuffer()
    frames, released = [], []
    for packet in stream:
        ready = buffer.push(packet)
        frames += ready
        released.append(len(ready))
    return frames, released


def decoded(frames: list[JitterFrame]) -> np.ndarray:
    decoder = OpusDecoder()
    return np.concatenate([f.to_ndarray().reshape(-1) for frame in frames for f in decoder.decode(frame)])


def test_in_order_packets_leave_at_once_and_decode_as_aiortcs() -> None:
    stream = packets(50)
    ours, released = through_ours(stream)
    assert released == [1] * 50  # no packet waits for a later one
    theirs = through_aiortc(stream)
    assert len(theirs) == 50 - 4  # aiortc still holds the last four (80 ms)
    assert [(f.data, f.timestamp) for f in ours[: len(theirs)]] == [(f.data, f.timestamp) for f in theirs]
    assert np.array_equal(decoded(ours[: len(theirs)]), decoded(theirs))


def test_reordered_packets_come_out_in_order() -> None:
    stream = packets(20)
    swapped = stream[:6] + [stream[7], stream[6]] + stream[8:]
    ours, released = through_ours(swapped)
    assert [f.timestamp for f in ours] == [p.timestamp for p in stream]
    assert released[6:8] == [0, 2]  # the early one waited for the missing one, then both went
    theirs = through_aiortc(swapped)
    assert [(f.data, f.timestamp) for f in ours[: len(theirs)]] == [(f.data, f.timestamp) for f in theirs]


def test_a_lost_packet_is_skipped_after_a_short_wait_and_no_delay_stays() -> None:
    stream = packets(40)
    lossy = stream[:10] + stream[11:]
    buffer = AudioJitterBuffer()
    released = [len(buffer.push(packet)) for packet in lossy]
    assert released[10 : 10 + MAX_HOLD] == [0] * MAX_HOLD  # waited MAX_HOLD packets for the lost one
    assert released[10 + MAX_HOLD] == MAX_HOLD + 1  # then gave up on it and let the held ones go
    assert released[10 + MAX_HOLD + 1 :] == [1] * (len(lossy) - 11 - MAX_HOLD)  # in order again: no delay kept
    assert buffer.lost == 1
    # aiortc's buffer, for the same loss, stalls until 16 packets wait behind the gap and then releases
    # one frame per packet: it ends 14 packets (280 ms) behind, and stays so.
    theirs = through_aiortc(lossy)
    assert (lossy[-1].timestamp - theirs[-1].timestamp) // FRAME == 14


def test_late_and_repeated_packets_are_dropped_and_the_sequence_wraps() -> None:
    stream = packets(12, first_seq=65530)
    buffer = AudioJitterBuffer()
    out = [frame.timestamp for packet in stream[:8] for frame in buffer.push(packet)]
    assert buffer.push(stream[3]) == [] and buffer.push(stream[7]) == []  # late, repeated
    out += [frame.timestamp for packet in stream[8:] for frame in buffer.push(packet)]
    assert out == [p.timestamp for p in stream] and buffer.late == 2


def test_aiortc_still_has_what_the_buffer_replaces() -> None:
    assert check_audio_jitter() == []


def test_an_aiortc_without_the_audio_buffer_is_refused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from aiortc import RTCRtpReceiver

    monkeypatch.delattr(RTCRtpReceiver, "_handle_rtp_packet")
    assert any("_handle_rtp_packet" in problem for problem in check_audio_jitter())


async def test_a_receiver_with_the_prompt_buffer_decodes_every_packet_as_it_arrives() -> None:
    """A real RTCRtpReceiver with the buffer and the inline decoder: each packet is decoded during its
    own handling (aiortc's holds four back), bit for bit the audio a stock receiver decodes."""
    from media.audio_jitter import use_prompt_jitter_buffer
    from media.rtp_receive_path import decode_inline
    from tests.test_rtp_receive_path import key, new_receiver, opus_payloads, parameters, rtp_stream, speech_with_pauses, stock_decode

    stream = rtp_stream(opus_payloads(speech_with_pauses()), 65_500, 2**32 - FRAME * 50)  # both counters wrap
    receiver = new_receiver()
    use_prompt_jitter_buffer(receiver)
    decoder = decode_inline(receiver)
    frames: list[tuple] = []
    decoder.attach(lambda frame: frames.append(key(frame)))
    await receiver.receive(parameters())
    for count, packet in enumerate(stream, start=1):
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
        assert len(frames) == count  # decoded before the next packet arrived
    await receiver.stop()
    stock = await stock_decode(stream)
    assert len(stock) == len(stream) - 4
    assert frames[: len(stock)] == stock
