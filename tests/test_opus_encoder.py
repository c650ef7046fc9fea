"""The inline Opus encoder: one packet per 20 ms frame, on our clock, decodable back to the same sound."""

from __future__ import annotations

import av
import numpy as np

from media.opus_encoder import LOOKAHEAD_SAMPLES, InlineOpusEncoder


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


def _decode(payloads: list[bytes]) -> np.ndarray:
    decoder = av.CodecContext.create("libopus", "r")
    decoder.format, decoder.layout, decoder.sample_rate = "s16", "mono", 48_000
    return np.concatenate([f.to_ndarray().reshape(-1) for p in payloads for f in decoder.decode(av.Packet(p))])


def _band_levels(samples: np.ndarray) -> np.ndarray:
    power = np.abs(np.fft.rfft(samples)) ** 2
    hz = np.fft.rfftfreq(samples.size, 1 / 48_000)
    bands = ((80, 300), (300, 1000), (1000, 3000), (3000, 6000), (6000, 10_000))
    return np.array([10 * np.log10(power[(hz >= low) & (hz < high)].sum()) for low, high in bands])


def _frame_levels(samples: np.ndarray) -> np.ndarray:
    blocks = samples[: samples.size // 960 * 960].reshape(-1, 960)
    return 10 * np.log10((blocks**2).mean(axis=1) + 1)


def test_speech_sounds_at_least_as_it_did_at_libopus_defaults() -> None:
    """Ours (CELT alone, complexity 5) against the encoder as it was (PyAV's, VoIP hybrid, complexity 10)."""
    from tests.speech import utterance

    source = np.concatenate([utterance("The weather is fine today, and tomorrow it will rain a little."), utterance("Would you like to hear more?")])
    source = source[: source.size // 960 * 960]
    chunks = source.reshape(-1, 960)
    ours = InlineOpusEncoder()
    before = InlineOpusEncoder(10, use_libopus=False)  # the encoder as it was: PyAV's, complexity 10
    now = _decode([ours.encode_payload(c) for c in chunks])[LOOKAHEAD_SAMPLES:].astype(np.float64)
    then = _decode([before.encode_payload(c) for c in chunks])[312:].astype(np.float64)  # VoIP mode's look-ahead
    then = then[: now.size]
    reference = source[: now.size].astype(np.float64)
    # Level by band, against the source: within 0.5 dB everywhere, and as close as before.
    assert np.all(np.abs(_band_levels(now) - _band_levels(reference)) < 0.5)
    assert np.all(np.abs(_band_levels(now) - _band_levels(reference)) < np.abs(_band_levels(then) - _band_levels(reference)) + 0.5)
    # Frame by frame, the loudness of every audible frame (above 30 dB) follows the source, at least as
    # closely as it did (the frames below it, the near-silence between words, are a few dB off either way).
    level_now, level_then, level_source = _frame_levels(now), _frame_levels(then), _frame_levels(reference)
    audible = level_source > 30
    assert np.corrcoef(level_now[audible], level_source[audible])[0, 1] > 0.999
    error_now, error_then = np.abs(level_now - level_source)[audible], np.abs(level_then - level_source)[audible]
    assert error_now.mean() < error_then.mean() + 0.2
