"""Digital silence reuses the encoder's settled packet (media.opus_encoder) without changing what is heard.

While the bot is silent no frame reaches libopus once its answer to zeros has settled. The decoded
stream through the silence is bit-identical to always encoding, so no tail of the speech before it
is cut, and speech after it decodes as faithfully (against the source) as with an encoder that saw
every silent frame.
"""

from __future__ import annotations

import av
import numpy as np

from media.opus_encoder import SILENCE_SETTLED, InlineOpusEncoder
from tests.speech import utterance

FRAME = 960


class AlwaysEncoding(InlineOpusEncoder):
    """The encoder as it was: every frame through libopus."""

    def encode_payload(self, samples: np.ndarray) -> bytes:
        return self._encode(samples)


def frames(samples: np.ndarray) -> list[np.ndarray]:
    return list(samples[: samples.size // FRAME * FRAME].reshape(-1, FRAME))


def decode(payloads: list[bytes]) -> np.ndarray:
    decoder = av.CodecContext.create("libopus", "r")
    decoder.format, decoder.layout, decoder.sample_rate = "s16", "mono", 48_000
    return np.concatenate([f.to_ndarray().reshape(-1) for p in payloads for f in decoder.decode(av.Packet(p))])


def snr_db(source: np.ndarray, decoded: np.ndarray, delay: int) -> float:
    reference = source.astype(np.float64)[: decoded.size - delay]
    error = reference - decoded.astype(np.float64)[delay : delay + reference.size]
    return float(10 * np.log10((reference**2).sum() / (error**2).sum()))


def test_silence_reuses_the_settled_packet_and_sounds_the_same() -> None:
    first, second = utterance("The weather is fine today."), utterance("Would you like to hear more?")
    silence = np.zeros(FRAME * 100, np.int16)
    source = np.concatenate([first[: first.size // FRAME * FRAME], silence, second[: second.size // FRAME * FRAME]])
    reused, always = InlineOpusEncoder(), AlwaysEncoding()
    reused_payloads = [reused.encode_payload(f) for f in frames(source)]
    always_payloads = [always.encode_payload(f) for f in frames(source)]
    # Most of the silence never ran libopus, and what went out for it is libopus's own packet.
    assert reused.frames_reused > 100 - 30
    assert set(reused_payloads[first.size // FRAME : first.size // FRAME + 100]) <= set(always_payloads)
    ours, theirs = decode(reused_payloads), decode(always_payloads)
    speech_again = (first.size // FRAME + 100) * FRAME
    # Up to the next speech the decoded audio is identical: the tail of the first sentence is all there.
    assert np.array_equal(ours[:speech_again], theirs[:speech_again])
    # After it, as faithful to the source as the encoder that saw every frame (libopus delays 312 samples).
    assert snr_db(source[speech_again:], ours[speech_again:], 312) > snr_db(source[speech_again:], theirs[speech_again:], 312) - 0.5


def test_speech_right_after_settling_is_encoded_and_silence_settles_again() -> None:
    encoder = InlineOpusEncoder()
    zeros = np.zeros(FRAME, np.int16)
    tone = (3000 * np.sin(np.arange(FRAME) * 2 * np.pi * 440 / 48_000)).astype(np.int16)
    for _ in range(40):
        encoder.encode_payload(zeros)
    settled = encoder.frames_reused
    assert settled > 0
    spoken = encoder.encode_payload(tone)
    assert spoken != encoder.encode_payload(zeros)  # speech went through libopus; silence did not reuse yet
    assert encoder.frames_reused == settled
    # libopus may take a while to answer zeros with one packet again (it can cycle through a few first).
    for _ in range(150):
        encoder.encode_payload(zeros)
    assert encoder.frames_reused > settled + SILENCE_SETTLED
    encoder.close()
