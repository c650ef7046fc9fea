"""The inline Opus encoder: one packet per 20 ms frame, on our clock, decodable back to the same sound."""

from __future__ import annotations

import av
import numpy as np

from media.opus_encoder import InlineOpusEncoder


def test_packets_carry_our_timestamps_and_decode_to_the_tone() -> None:
    encoder = InlineOpusEncoder()
    decoder = av.CodecContext.create("opus", "r")
    t = np.arange(960 * 50) / 48_000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    decoded = []
    for i in range(50):
        packet = encoder.encode(tone[i * 960 : (i + 1) * 960], pts=i * 960)
        assert packet.pts == i * 960 and packet.time_base.denominator == 48_000
        assert packet.size > 3
        for frame in decoder.decode(packet):
            data = frame.to_ndarray()
            first = data[0] if frame.format.is_planar else data.reshape(-1)[:: len(frame.layout.channels)]
            decoded.append(first * 32768 if first.dtype.kind == "f" else first)
    audio = np.concatenate(decoded)[4800:].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    peak_hz = np.fft.rfftfreq(audio.size, 1 / 48_000)[np.argmax(spectrum)]
    assert abs(peak_hz - 440) < 5
    assert 3000 < np.sqrt(np.mean(audio**2)) < 8000
