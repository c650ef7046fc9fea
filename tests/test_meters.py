"""Meters on the media clock: exact integers from RTP timestamps, samples and presentation timestamps.

The inbound meter is driven with explicit arrival times (monotonic ns), so the wall-clock bounds on
what a client's timestamps may claim are tested deterministically.
"""

from __future__ import annotations

import random

import pytest

from media.meters import START_SLACK_NS, RtpAudioMeter, SampleCounter, VideoMeter, WallClockMeter
from media.opus_duration import opus_packet_samples

OPUS_20MS = bytes([0xF8, 0x00])  # CELT fullband, 20 ms, one frame
OPUS_DTX = bytes([0xF8])  # a one-byte DTX packet still carries one 20 ms frame
OPUS_120MS = bytes([0x1B, 0x02])  # SILK 60 ms, code 3, two frames: the most a packet may hold
OPUS_TOO_LONG = bytes([0x1B, 0x03])  # three 60 ms frames: 180 ms is malformed

MS = 1_000_000  # ns
FRAME = 960  # 20 ms at 48 kHz
HOUR = 48_000 * 3600
T0 = 5_000_000_000  # an arbitrary monotonic clock reading


def real_time(meter: RtpAudioMeter, ssrc: int, first_ts: int, packets: int, *, at_ns: int = T0) -> int:
    """Feed `packets` 20 ms packets as a live sender does: each arrives as its audio ends. Returns the next arrival."""
    for i in range(packets):
        meter.on_packet(ssrc, (first_ts + i * FRAME) % (1 << 32), OPUS_20MS, at_ns + (i + 1) * 20 * MS)
    return at_ns + packets * 20 * MS


@pytest.mark.parametrize(
    ("toc", "extra", "samples"),
    [
        (0x08, b"", 960),  # SILK NB 20 ms, code 0
        (0x00, b"", 480),  # SILK NB 10 ms
        (0x18, b"", 2880),  # SILK NB 60 ms
        (0x78, b"", 960),  # hybrid FB 20 ms
        (0x80, b"", 120),  # CELT NB 2.5 ms
        (0xF9, b"", 1920),  # CELT FB 20 ms, code 1: two frames
        (0xFB, bytes([0x03]), 2880),  # code 3: three frames of 20 ms
    ],
)
def test_opus_toc_durations(toc: int, extra: bytes, samples: int) -> None:
    assert opus_packet_samples(bytes([toc]) + extra + b"\x00") == samples


def test_rtp_span_is_exact_with_jitter_loss_reordering_and_wraparound() -> None:
    rng = random.Random(7)
    packets = 367  # 7.340 s of 20 ms packets
    start = (1 << 32) - FRAME * 100  # wraps a third of the way through
    arrivals = []
    for i in range(packets):
        delay = rng.randrange(0, 40) * MS  # network jitter
        if i == 0:
            delay = 90 * MS  # the first packet is the slowest: the wall clock must not lose that
        elif i % 7 == 0:
            delay = 45 * MS  # overtaken by the next packet: reordering
        arrivals.append((T0 + (i + 1) * 20 * MS + delay, (start + i * FRAME) % (1 << 32)))
    kept = [arrivals[0]] + [a for a in arrivals[1:-1] if rng.random() > 0.05] + [arrivals[-1]]
    kept.sort()
    assert [ts for _, ts in kept] != sorted(ts for _, ts in kept)
    meter = RtpAudioMeter()
    readings = []
    for arrival_ns, ts in kept:
        meter.on_packet(1234, ts, OPUS_20MS, arrival_ns)
        readings.append(meter.samples)
    assert readings == sorted(readings)  # a running total never goes back
    assert meter.samples == packets * FRAME
    assert meter.media_us == 7_340_000


def test_dtx_pauses_count_for_the_time_they_span() -> None:
    meter = RtpAudioMeter()
    now = real_time(meter, 1, 5000, 50)  # 1 s of speech
    ts = 5000 + 50 * FRAME
    for _ in range(5):  # 2 s of DTX: one packet every 400 ms
        meter.on_packet(1, ts, OPUS_DTX, now + 20 * MS)
        ts += FRAME * 20
        now += 400 * MS
    meter.on_packet(1, ts, OPUS_20MS, now + 20 * MS)
    assert meter.media_us == 1_000_000 + 2_000_000 + 20_000


def test_a_forged_forward_jump_of_12_hours_is_no_time() -> None:
    meter = RtpAudioMeter()
    now = real_time(meter, 1, 0, 50)
    # From here on every timestamp is 12 hours ahead: one jump, then a steady stream.
    real_time(meter, 1, 12 * HOUR + 50 * FRAME, 50, at_ns=now)
    assert meter.media_us == 2_000_000
    # A single forged packet in the middle of a stream adds only the 20 ms it carries.
    meter = RtpAudioMeter()
    now = real_time(meter, 1, 0, 50)
    meter.on_packet(1, 12 * HOUR, OPUS_20MS, now + 20 * MS)
    real_time(meter, 1, 51 * FRAME, 49, at_ns=now + 20 * MS)
    assert meter.media_us == 2_000_000


def test_a_backward_jump_neither_adds_nor_removes_time() -> None:
    meter = RtpAudioMeter()
    now = real_time(meter, 1, 10 * HOUR, 50)
    real_time(meter, 1, 9 * HOUR, 50, at_ns=now)  # an hour back, then on
    assert meter.media_us == 2_000_000
    # Back into time already counted: the spans miss it, the packets' own durations do not.
    meter = RtpAudioMeter()
    now = real_time(meter, 1, 0, 50)
    real_time(meter, 1, 25 * FRAME, 50, at_ns=now)
    assert meter.media_us == 2_000_000


def test_timestamps_that_never_advance_count_the_packets_own_durations() -> None:
    meter = RtpAudioMeter()
    real_time(meter, 1, 777, 100)
    frozen = RtpAudioMeter()
    for i in range(100):
        frozen.on_packet(1, 777, OPUS_20MS, T0 + (i + 1) * 20 * MS)
    assert frozen.media_us == meter.media_us == 2_000_000


def test_never_more_than_the_wall_clock_whatever_the_packets_claim() -> None:
    # Ten seconds of timestamps (and of 120 ms packets) delivered within 10 ms.
    meter = RtpAudioMeter()
    for i in range(500):
        meter.on_packet(1, i * FRAME, OPUS_20MS if i % 2 else OPUS_120MS, T0 + i * 20_000)
    assert 0 < meter.media_us <= 10_000 + 120_000 + START_SLACK_NS // 1000
    # A stream whose timestamps creep ahead of real time, a little every packet, within the jitter tolerance.
    meter = RtpAudioMeter()
    for i in range(500):
        meter.on_packet(1, i * 10 * FRAME, OPUS_20MS, T0 + (i + 1) * 20 * MS)
    assert meter.media_us <= 10_000_000 + START_SLACK_NS // 1000
    # Malformed durations count for nothing.
    meter = RtpAudioMeter()
    for i in range(10):
        meter.on_packet(1, i * 9 * FRAME, OPUS_TOO_LONG, T0 + i * 180 * MS)
    assert meter.packets == 0 and meter.media_us == 0


def test_parallel_ssrcs_share_one_wall_clock() -> None:
    meter = RtpAudioMeter()
    for i in range(100):  # four sources at once for 2 s
        for ssrc in range(4):
            meter.on_packet(ssrc, ssrc * 7_000_000 + i * FRAME, OPUS_20MS, T0 + (i + 1) * 20 * MS + ssrc)
    assert meter.media_us == 2_000_000
    # One source after another: each counts its own time, empty payloads are ignored.
    meter = RtpAudioMeter()
    now = real_time(meter, 1, 100, 10)
    meter.on_packet(1, 100 + 10 * FRAME, b"", now + 20 * MS)
    real_time(meter, 2, 9_000_000, 10, at_ns=now + 500 * MS)
    assert meter.media_us == 2 * 200_000
    # A new SSRC on every packet, in real time: counted once, and only so many sources are kept.
    meter = RtpAudioMeter()
    for i in range(100):
        meter.on_packet(1000 + i, i * FRAME, OPUS_20MS, T0 + (i + 1) * 20 * MS)
    assert meter.media_us == 2_000_000 and len(meter._sources) <= 8


def test_sample_counter_video_and_wall_clock() -> None:
    counter = SampleCounter(rate=48_000, samples=48_000 * 3 + 24)
    assert counter.media_us == 3_000_500
    video = VideoMeter(time_base_den=90_000)
    for i in range(30 * 4):  # 4 s at 30 fps
        video.on_frame(i * 3_000)
    assert video.media_us == 4_000_000
    clock = WallClockMeter()
    assert clock.media_us == 0
    clock.start()
    clock.stop()
    assert 0 <= clock.media_us < 1_000_000
