"""Meters on the media clock: exact integers from RTP timestamps, samples and presentation timestamps."""

from __future__ import annotations

import random

import pytest

from media.meters import RtpAudioMeter, SampleCounter, VideoMeter, WallClockMeter
from media.opus_duration import opus_packet_samples

OPUS_20MS = bytes([0xF8, 0x00])  # CELT fullband, 20 ms, one frame
OPUS_DTX = bytes([0xF8])  # a one-byte DTX packet still carries one 20 ms frame


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


def test_rtp_span_is_exact_with_loss_reordering_and_wraparound() -> None:
    rng = random.Random(7)
    packets = 367  # 7.340 s of 20 ms packets
    start = (1 << 32) - 960 * 100  # wraps a third of the way through
    arrivals = [(start + i * 960) % (1 << 32) for i in range(packets)]
    kept = [arrivals[0]] + [ts for ts in arrivals[1:-1] if rng.random() > 0.05] + [arrivals[-1]]
    for i in range(0, len(kept) - 1, 7):  # some reordering
        kept[i], kept[i + 1] = kept[i + 1], kept[i]
    meter = RtpAudioMeter()
    for ts in kept:
        meter.on_packet(1234, ts, OPUS_20MS)
    assert meter.samples == packets * 960
    assert meter.media_us == 7_340_000


def test_dtx_pauses_count_for_the_time_they_span() -> None:
    meter = RtpAudioMeter()
    ts = 5000
    for _ in range(50):  # 1 s of speech
        meter.on_packet(1, ts, OPUS_20MS)
        ts += 960
    for _ in range(5):  # 2 s of DTX: one packet every 400 ms
        meter.on_packet(1, ts, OPUS_DTX)
        ts += 960 * 20
    meter.on_packet(1, ts, OPUS_20MS)
    assert meter.media_us == 1_000_000 + 2_000_000 + 20_000


def test_a_new_ssrc_adds_its_own_span_and_empty_payloads_are_ignored() -> None:
    meter = RtpAudioMeter()
    for i in range(10):
        meter.on_packet(1, 100 + i * 960, OPUS_20MS)
        meter.on_packet(2, 9_000_000 + i * 960, OPUS_20MS)
    meter.on_packet(1, 100 + 10 * 960, b"")
    assert meter.media_us == 2 * 200_000


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
