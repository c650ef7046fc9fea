"""Inbound audio decoded inline (media.rtp_receive_path) is aiortc's own decoded audio, frame for frame.

The same RTP packets go through a stock RTCRtpReceiver (jitter buffer, decoder thread, track) and
through one with the inline decoder; every frame must match: timestamp, format and PCM, bit for bit,
with loss, reordering, duplicates, overflowing gaps, a sequence restart and both counters wrapping.
Over real sockets, the datagram path feeds the receiver every packet the peer sent, and what it
decoded is again what a stock receiver decodes from those packets.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpEncodingParameters, RTCRtpReceiveParameters
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import RtpPacket

from media import rtp_receive_path
from media.aiortc_internals import UnsupportedAiortc, check_aiortc, release_transports, tap_inbound_rtp
from media.rtp_receive_path import InlineDecoder, decode_inline
from tests.rtc_client import PcmSourceTrack
from tests.speech import utterance

pytestmark = pytest.mark.asyncio(loop_scope="session")

RATE = 48_000
FRAME = 960
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=RATE, channels=2, payloadType=111)
SSRC = 0x1234ABCD


def speech_with_pauses() -> np.ndarray:
    silence = np.zeros(RATE // 2, np.int16)
    return np.concatenate([utterance("Hello there, how are you today?"), silence, utterance("Fine, thank you.")])


def opus_payloads(samples: np.ndarray) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate, codec.format, codec.layout, codec.sample_rate = 32_000, "s16", "mono", RATE
    codec.time_base = fractions.Fraction(1, RATE)
    payloads = []
    for index, chunk in enumerate(samples[: samples.size // FRAME * FRAME].reshape(-1, FRAME)):
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, index * FRAME, fractions.Fraction(1, RATE)
        payloads += [bytes(p) for p in codec.encode(frame)]
    return payloads


def rtp_stream(payloads: list[bytes], first_seq: int, first_ts: int) -> list[RtpPacket]:
    return [
        RtpPacket(payload_type=OPUS.payloadType, marker=1, sequence_number=(first_seq + i) & 0xFFFF,
                  timestamp=(first_ts + i * FRAME) & 0xFFFFFFFF, ssrc=SSRC, payload=p)
        for i, p in enumerate(payloads)
    ]  # fmt: skip


def faulty(packets: list[RtpPacket]) -> list[RtpPacket]:
    """Loss, reordering, duplicates, a gap longer than the jitter buffer, a late straggler, a restart."""
    out = list(packets[:150])
    for i in (10, 11, 40):  # single and double losses
        out[i] = None  # type: ignore[call-overload]
    out[20], out[21] = out[21], out[20]  # swapped neighbours
    out[30], out[33] = out[33], out[30]  # reordered by three
    out.insert(51, packets[50])  # a duplicate
    for i in range(61, 82):  # 21 lost in a row: more than the buffer's 16 slots
        out[i] = None  # type: ignore[call-overload]
    straggler = out[90]
    out[90] = None  # type: ignore[call-overload]
    out.insert(112, straggler)  # arrives 20 packets late
    kept = [p for p in out if p is not None]
    # The sender restarts its sequence far away (a new stream on the same SSRC) for the rest.
    restart = [
        RtpPacket(payload_type=p.payload_type, marker=1, sequence_number=(p.sequence_number + 20_000) & 0xFFFF,
                  timestamp=p.timestamp, ssrc=SSRC, payload=p.payload)
        for p in packets[150:]
    ]  # fmt: skip
    return kept + restart


@dataclass
class FakeDtls:
    """What RTCRtpReceiver.receive and stop use of their DTLS transport."""

    state: str = "connected"
    transport: object = field(default_factory=lambda: type("Ice", (), {"_connection": type("Conn", (), {"_protocols": []})()})())
    _stats_id: str = "fake"

    def _register_rtp_receiver(self, receiver: object, parameters: object) -> None:
        pass

    def _unregister_rtp_receiver(self, receiver: object) -> None:
        pass

    async def _send_rtp(self, data: bytes) -> None:
        pass

    __hash__ = object.__hash__


def new_receiver() -> RTCRtpReceiver:
    receiver = RTCRtpReceiver("audio", FakeDtls())  # type: ignore[arg-type]
    receiver._track = RemoteStreamTrack(kind="audio")
    return receiver


def parameters(payload_type: int = OPUS.payloadType) -> RTCRtpReceiveParameters:
    codec = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=RATE, channels=2, payloadType=payload_type)
    return RTCRtpReceiveParameters(codecs=[codec], encodings=[RTCRtpEncodingParameters(ssrc=SSRC, payloadType=payload_type)])


FrameKey = tuple[int | None, int, int, str, str, bytes]


def key(frame: av.AudioFrame) -> FrameKey:
    return (frame.pts, frame.samples, frame.sample_rate, frame.format.name, frame.layout.name, frame.to_ndarray().tobytes())


async def stock_decode(packets: list[RtpPacket]) -> list[FrameKey]:
    """aiortc as it ships: the decoder thread and the track's queue."""
    receiver = new_receiver()
    await receiver.receive(parameters(packets[0].payload_type))
    frames: list[FrameKey] = []

    async def read() -> None:
        while True:
            try:
                frames.append(key(await receiver.track.recv()))
            except MediaStreamError:
                return

    reader = asyncio.ensure_future(read())
    for packet in packets:
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
    await asyncio.sleep(0.3)  # let the thread drain its queue
    await receiver.stop()
    await asyncio.wait_for(reader, 5)
    return frames


async def inline_decode(packets: list[RtpPacket], rate: int | None = None) -> tuple[list[FrameKey], InlineDecoder]:
    receiver = new_receiver()
    decoder = decode_inline(receiver)
    frames: list[FrameKey] = []
    decoder.attach(lambda frame: frames.append(key(frame)), rate)
    await receiver.receive(parameters())
    for packet in packets:
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
    await receiver.stop()
    return frames, decoder


@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "counters-wrap"])
@pytest.mark.parametrize("faults", [False, True], ids=["clean", "loss-reorder-restart"])
async def test_inline_decoding_is_aiortcs_decoding_bit_for_bit(wrap: bool, faults: bool) -> None:
    payloads = opus_payloads(speech_with_pauses())
    # Wrapping: the sequence and the timestamp both wrap a few seconds in.
    packets = rtp_stream(payloads, 65_400 if wrap else 1_000, 2**32 - FRAME * 200 if wrap else 5_000)
    if faults:
        packets = faulty(packets)
    stock = await stock_decode(packets)
    inline, decoder = await inline_decode(packets)
    assert len(stock) > len(payloads) // 2
    assert [f[:5] for f in inline] == [f[:5] for f in stock]
    assert inline == stock
    assert decoder.closed and decoder.frames == len(inline) and decoder.decode_errors == 0


async def test_frames_before_the_pipeline_attaches_are_kept_and_none_after_detach() -> None:
    packets = rtp_stream(opus_payloads(speech_with_pauses()[: RATE]), 7, 0)
    receiver = new_receiver()
    decoder = decode_inline(receiver)
    await receiver.receive(parameters())
    for packet in packets[:20]:
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
    early = decoder.waiting
    assert early > 0 and decoder.frames == 0  # kept encoded, as aiortc's track queue kept them decoded
    heard: list[av.AudioFrame] = []
    decoder.attach(heard.append, 16_000)
    # Decoded once the pipeline is there, in order, at the rate it asked for.
    assert len(heard) == early == decoder.frames and decoder.waiting == 0
    assert [f.pts for f in heard] == [i * FRAME for i in range(early)]
    assert {(f.sample_rate, f.samples, f.layout.name) for f in heard} == {(16_000, FRAME // 3, "mono")}
    decoder.attach(None)
    for packet in packets[20:]:
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
    assert len(heard) == early == decoder.frames and decoder.waiting > 0
    await receiver.stop()
    await receiver.stop()  # idempotent
    assert decoder.waiting == 0


@pytest.mark.parametrize("rate", [16_000, 48_000])
async def test_samples_handed_over_are_the_frames_audio(rate: int) -> None:
    """A pipeline that takes arrays (on_samples) gets what the frame path carries, array for frame."""
    packets = faulty(rtp_stream(opus_payloads(speech_with_pauses()), 1_000, 5_000))
    framed, _ = await inline_decode(packets, rate)
    receiver = new_receiver()
    decoder = decode_inline(receiver)
    arrays: list[np.ndarray] = []
    decoder.attach(lambda frame: pytest.fail("a frame was made"), rate, arrays.append)
    await receiver.receive(parameters())
    for packet in packets:
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
    await receiver.stop()
    assert len(arrays) == len(framed) == decoder.frames > 0
    assert all(a.dtype == np.int16 and a.ndim == 1 for a in arrays)
    assert [a.tobytes() for a in arrays] == [f[5] for f in framed]
    assert len({a.ctypes.data for a in arrays[-5:]}) == 5  # each its own, not the decoder's reused buffer


def rate_of(frames: list[FrameKey]) -> int:
    return {f[2] for f in frames}.pop()


def mono_pcm(frames: list[FrameKey]) -> np.ndarray:
    """The frames' audio as one mono array (the first channel of interleaved stereo)."""
    channels = {2 if f[4] == "stereo" else 1 for f in frames}.pop()
    return np.concatenate([np.frombuffer(f[5], np.int16)[::channels] for f in frames])


def to_16k(frames: list[FrameKey]) -> np.ndarray:
    """aiortc's 48 kHz frames through the voice pipeline's resampler, as before decoding at 16 kHz."""
    from media.audio_resample import InboundResampler

    resampler = InboundResampler(16_000)
    out = []
    for pts, samples, rate, fmt, layout, data in frames:
        frame = av.AudioFrame.from_ndarray(np.frombuffer(data, np.int16).reshape(1, -1), format=fmt, layout=layout)
        frame.sample_rate = rate
        out.append(resampler.resample(frame))
    return np.concatenate([*out, resampler.flush()])


@pytest.mark.parametrize("faults", [False, True], ids=["clean", "loss-reorder-restart"])
async def test_decoding_at_16k_is_decoding_at_48k_then_resampling(faults: bool) -> None:
    payloads = opus_payloads(speech_with_pauses())
    packets = rtp_stream(payloads, 1_000, 5_000)
    if faults:
        packets = faulty(packets)
    stock = await stock_decode(packets)
    direct, decoder = await inline_decode(packets, 16_000)
    # The same frames, with the same timestamps, each a third of the samples: the same media time.
    assert [f[0] for f in direct] == [f[0] for f in stock]
    assert [f[1] * 3 for f in direct] == [f[1] for f in stock]
    assert rate_of(direct) == 16_000 and {f[3:5] for f in direct} == {("s16", "mono")}
    assert decoder.frames == len(direct) and decoder.decode_errors == 0
    # And the same sound: what libopus decodes at 16 kHz is what 48 kHz decoding + resampling gave.
    ours, before = mono_pcm(direct).astype(np.float64), to_16k(stock).astype(np.float64)
    assert ours.size == before.size
    # The two differ by a fraction of a sample (the filters' phase): compare at the best shift.
    spectrum, reference = np.fft.rfft(ours), np.fft.rfft(before)
    hz = np.fft.rfftfreq(ours.size, 1 / 16_000)
    snr, shift = max(
        (_snr_db(ours, np.fft.irfft(reference * np.exp(-2j * np.pi * hz * lag / 16_000), ours.size)), lag)
        for lag in np.arange(-2, 2, 0.05)
    )  # fmt: skip
    assert abs(shift) < 1 and snr > 28, (snr, shift)
    # Level by band, up to where the resampler rolls off (7.5 kHz): the same within 0.3 dB.
    for low, high in ((0, 300), (300, 1000), (1000, 3000), (3000, 6000), (6000, 7500)):
        band = (hz >= low) & (hz < high)
        level = 10 * np.log10((abs(spectrum[band]) ** 2).sum() / (abs(reference[band]) ** 2).sum())
        assert abs(level) < 0.3, (low, high, level)


def _snr_db(signal: np.ndarray, other: np.ndarray) -> float:
    return float(10 * np.log10((signal**2).sum() / ((signal - other) ** 2).sum()))


async def test_decoding_mono_at_48k_is_aiortcs_first_channel_bit_for_bit() -> None:
    packets = faulty(rtp_stream(opus_payloads(speech_with_pauses()), 1_000, 5_000))
    stock = await stock_decode(packets)
    direct, _ = await inline_decode(packets, 48_000)
    assert [f[:3] for f in direct] == [f[:3] for f in stock]
    assert {f[4] for f in direct} == {"mono"}
    assert np.array_equal(mono_pcm(direct), mono_pcm(stock))


async def test_a_corrupt_packet_is_counted_and_the_next_decode() -> None:
    packets = rtp_stream(opus_payloads(speech_with_pauses()[: RATE // 2]), 1, 0)
    packets[5].payload = b"\xff\xff\xff"  # code 3, 63 frames: longer than an Opus packet may play
    frames, decoder = await inline_decode(packets, 16_000)
    assert decoder.decode_errors == 1 and len(frames) == decoder.frames >= len(packets) - 5


# -- over real sockets ----------------------------------------------------------------------------


def reorder_and_drop(pc: RTCPeerConnection, drop: Callable[[int], bool]) -> list[int]:
    """The peer's outgoing RTP (before SRTP): drops some, swaps every 25th packet with the next."""
    transport = pc.getSenders()[0].transport
    send = transport._send_rtp
    held: list[bytes] = []
    index = 0
    sent: list[int] = []

    async def send_rtp(data: bytes) -> None:
        nonlocal index
        if data[1] >= 192 and data[1] <= 208:  # RTCP
            await send(data)
            return
        i, index = index, index + 1
        if drop(i):
            return
        if i % 25 == 0 and not held:
            held.append(data)
            return
        sent.append(RtpPacket.parse(data).sequence_number)
        await send(data)
        while held:
            late = held.pop()
            sent.append(RtpPacket.parse(late).sequence_number)
            await send(late)

    transport._send_rtp = send_rtp  # type: ignore[method-assign]
    return sent


async def test_over_real_sockets_the_datagram_path_delivers_everything_and_decodes_exactly() -> None:
    source = PcmSourceTrack(speech_with_pauses(), end_when_done=True)
    sender_pc, receiver_pc = RTCPeerConnection(), RTCPeerConnection()
    sender_pc.addTrack(source)
    receiver_pc.addTransceiver("audio", direction="recvonly")
    transceiver = receiver_pc.getTransceivers()[0]
    decoder = decode_inline(transceiver.receiver)
    frames: list[FrameKey] = []
    decoder.attach(lambda frame: frames.append(key(frame)))
    arrived: list[RtpPacket] = []
    tap_inbound_rtp(transceiver.receiver, arrived.append)
    sent = reorder_and_drop(sender_pc, lambda i: i % 17 == 5)
    rerouted = []
    try:
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        while not source.done:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        # The datagram path was taken: SRTP skipped aioice's queue.
        rerouted = list(rtp_receive_path._rerouted.get(transceiver.receiver.transport, []))
        assert rerouted
    finally:
        await sender_pc.close()
        await receiver_pc.close()
        release_transports(receiver_pc)
    # Every packet that left arrived, once, in the order it left (but those that left before the
    # receiving side had its keys or had started: the stock path drops those too).
    arrived_seqs = [p.sequence_number for p in arrived]
    assert len(sent) > 100 and len(arrived) >= len(sent) - 10
    assert arrived_seqs == sent[len(sent) - len(arrived) :]
    assert decoder.frames == len(frames) > 100
    # A stock receiver given the same packets decodes the same audio (its last 4 frames stay in its
    # jitter buffer when the stream stops, in both cases).
    assert frames == await stock_decode(arrived)
    # Released with the peer connection: nothing of the call stays reachable from its sockets.
    assert all("datagram_received" not in vars(p) for p in rerouted)


async def test_an_aiortc_without_the_decoder_queue_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rtp_receive_path, "source_of", lambda owner, name: "")
    with pytest.raises(UnsupportedAiortc, match="decoder"):
        check_aiortc()


def test_the_arrival_clock_is_aiortcs_clock_to_the_millisecond() -> None:
    """ntp_ms gives what aiortc's clock.current_ms() gives for the same instant (floored to the
    microsecond, as datetime.now takes it), across the range of instants a call can see."""
    import datetime

    from aiortc import clock

    rng = np.random.default_rng(3)
    unix_epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    instants = [int(v) for v in rng.integers(1_600_000_000 * 10**9, 4_000_000_000 * 10**9, 20_000)]
    instants += [1_795_000_000_999_999_999, 1_795_000_000_000_000_000, 1_795_000_000_000_999_000]
    for time_ns in instants:
        at = unix_epoch + datetime.timedelta(microseconds=time_ns // 1000)
        expected = int((at - clock.NTP_EPOCH).total_seconds() * 1000)
        assert rtp_receive_path.ntp_ms(time_ns) == expected, time_ns
    assert abs(rtp_receive_path.ntp_ms(time.time_ns()) - clock.current_ms()) <= 2
