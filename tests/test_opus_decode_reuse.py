"""A repeated packet that leaves libopus's decoder state as it found it is not decoded again (media.libopus).

The reuse must be invisible: every frame decodes to exactly the samples a decoder that decodes every
packet gives, through silence, the speech after it, and back, at the rates a call decodes at.
"""

from __future__ import annotations

import numpy as np
import pytest

from media import libopus
from media.opus_steady import SteadyDecodes
from tests.speech import utterance
from tests.test_rtp_receive_path import opus_payloads


@pytest.fixture(autouse=True)
def _libopus_present() -> None:
    assert libopus.available(), libopus.unavailable_reason()


def speech_48k() -> np.ndarray:
    return utterance("hello there, can you hear me")  # 48 kHz mono


@pytest.mark.parametrize("rate", [16_000, 48_000])
def test_reused_frames_are_exactly_what_decoding_gives(rate: int) -> None:
    """A muted microphone's packets, looped three times (each loop opens with two packets of its own,
    so the decoder moves between states), then speech, silence and speech again: every frame as libopus
    decodes it. (After speech libopus's background estimate keeps drifting for many seconds, so the
    silence there is decoded: nothing is reused until it settles.)"""
    muted = opus_payloads(np.zeros(48_000 * 2, np.int16))
    speech = opus_payloads(speech_48k())
    packets = muted * 3 + speech + opus_payloads(np.zeros(48_000, np.int16)) + speech
    reusing, decoding = libopus.OpusDecoder(rate), libopus.OpusDecoder(rate, reuse_steady=False)
    for index, packet in enumerate(packets):
        ours = reusing.decode(packet).copy()
        assert np.array_equal(ours, decoding.decode(packet)), f"frame {index} differs"
    assert reusing.reused > len(muted) * 3 // 2
    assert decoding.reused == 0
    assert len(set(speech)) > 50  # the speech really was decoded


def test_packets_that_alternate_are_all_decoded() -> None:
    speech = opus_payloads(speech_48k())
    a, b = speech[10], speech[11]
    reusing, decoding = libopus.OpusDecoder(16_000), libopus.OpusDecoder(16_000, reuse_steady=False)
    for packet in [a, b] * 20:
        assert np.array_equal(reusing.decode(packet).copy(), decoding.decode(packet))
    assert reusing.reused == 0


def test_the_returned_samples_may_be_changed_without_changing_the_next() -> None:
    packets = opus_payloads(np.zeros(48_000 * 2, np.int16))
    decoder = libopus.OpusDecoder(16_000)
    for packet in packets:
        decoder.decode(packet)
    assert decoder.reused
    first = decoder.decode(packets[-1])
    expected = first.copy()
    first[:] = 12345  # the caller's view of the buffer: scribbling on it spoils nothing kept
    assert np.array_equal(decoder.decode(packets[-1]), expected)


class ToyDecoder:
    """A decoder whose state flips on packet b"p" and holds on b"q": answers must track it exactly."""

    def __init__(self, reuse: bool) -> None:
        self.state = bytearray(b"\x00" * 8)
        self.real_decodes = 0
        self.memo = SteadyDecodes(lambda: bytes(self.state), self._write) if reuse else None

    def _write(self, state: bytes) -> None:
        self.state[:] = state

    def decode(self, payload: bytes) -> np.ndarray:
        if self.memo is not None and (known := self.memo.answer(payload)) is not None:
            return known
        self.real_decodes += 1
        if payload == b"p":
            self.state[0] ^= 1
        out = np.array([self.state[0] * 10 + payload[0]], np.int16)
        if self.memo is not None:
            self.memo.learn(payload, out)
        return out


def test_a_packet_off_the_known_moves_is_decoded_from_the_state_the_answers_reached() -> None:
    packets = [b"p"] * 9 + [b"q"] * 3 + [b"p"] * 5 + [b"x", b"q", b"p", b"p", b"p", b"q"]
    reusing, decoding = ToyDecoder(True), ToyDecoder(False)
    got = [int(reusing.decode(p)[0]) for p in packets]
    assert got == [int(decoding.decode(p)[0]) for p in packets]
    assert reusing.real_decodes < decoding.real_decodes
