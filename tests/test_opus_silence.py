"""Digital silence reuses the encoder's settled packets (media.opus_encoder) without changing what is heard.

While the bot is silent no frame reaches libopus once its answer to zeros has settled into a cycle of
packets (a short cycle, in the restricted low-delay mode the encoder runs in). Up to that moment the
decoded stream is bit-identical to always encoding, so no tail of the speech before it is cut; after
it, what is sent is libopus's own cycle, which decodes to silence; and speech after it decodes as
faithfully (against the source) as with an encoder that saw every silent frame.
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from media import libopus
from media.opus_encoder import COMPLEXITY, MAX_SILENCE_CYCLE, NEAR_SILENCE, SILENCE_SETTLED, InlineOpusEncoder
from tests.speech import utterance

FRAME = 960
PAUSE = 100  # frames


class AlwaysEncoding(InlineOpusEncoder):
    """The encoder without the reuse: every frame through libopus (near-silent ones as zeros, as ours)."""

    def encode_payload(self, samples: np.ndarray) -> bytes:
        return self._encode(np.zeros_like(samples) if near_silent(samples) else samples)


def near_silent(samples: np.ndarray) -> bool:
    return int(np.abs(samples.astype(np.int32)).max()) <= NEAR_SILENCE


BACKENDS = [pytest.param(True, id="libopus"), pytest.param(False, id="pyav")]


@pytest.fixture(autouse=True)
def _libopus_present() -> None:
    assert libopus.available(), libopus.unavailable_reason()


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


def lag_of(decoded: np.ndarray, source: np.ndarray) -> int:
    """How many samples the decoded audio lags the source by (libopus's look-ahead, as this path has it)."""
    span = min(source.size, decoded.size) - 512
    head = source[:span].astype(np.float64)
    return max(range(0, 512), key=lambda lag: float(np.dot(decoded[lag : lag + span].astype(np.float64), head)))


def whole_frames(samples: np.ndarray) -> np.ndarray:
    return samples[: samples.size // FRAME * FRAME]


@pytest.mark.parametrize("use_libopus", BACKENDS)
@pytest.mark.parametrize("complexity", [5, 10])
def test_silence_reuses_the_settled_cycle_and_sounds_the_same(use_libopus: bool, complexity: int) -> None:
    first, second = whole_frames(utterance("The weather is fine today.")), whole_frames(utterance("Would you like to hear more?"))
    silence = np.zeros(FRAME * PAUSE, np.int16)
    source = np.concatenate([first, silence, second])
    reused = InlineOpusEncoder(complexity, use_libopus=use_libopus)
    always = AlwaysEncoding(complexity, use_libopus=use_libopus)
    reused_payloads, reuse_began = [], None
    for index, frame in enumerate(frames(source)):
        reused_payloads.append(reused.encode_payload(frame))
        if reuse_began is None and reused.frames_reused:
            reuse_began = index
    always_payloads = [always.encode_payload(f) for f in frames(source)]
    pause = slice(first.size // FRAME, first.size // FRAME + PAUSE)
    # Most of the silence never ran libopus, and what went out for it is libopus's own packets.
    # (The pause begins where the speech's last frames fade to within NEAR_SILENCE, and ends where the next rise.)
    chunks = frames(source)
    start = next(i for i in range(pause.start, 0, -1) if not near_silent(chunks[i - 1]))
    stop = next(i for i in range(pause.stop, len(chunks)) if not near_silent(chunks[i]))
    assert reuse_began is not None and reused.frames_reused == stop - reuse_began
    # libopus answers zeros with its cycle ~14 frames in, which must then come round SILENCE_SETTLED times.
    assert SILENCE_SETTLED <= reuse_began - start <= 16 + MAX_SILENCE_CYCLE * SILENCE_SETTLED
    assert set(reused_payloads[start:stop]) <= set(always_payloads[start:reuse_began])
    ours, theirs = decode(reused_payloads), decode(always_payloads)
    # Up to the reuse the decoded audio is identical: the tail of the first sentence is all there ...
    began = reuse_began * FRAME
    assert np.array_equal(ours[:began], theirs[:began])
    # ... and from then on the pause decodes to silence, as it did.
    speech_again = stop * FRAME
    assert np.abs(ours[began:speech_again].astype(np.int32)).max() <= 2
    assert np.abs(theirs[began:speech_again].astype(np.int32)).max() <= 2
    # After it, as faithful to the source as the encoder that saw every frame (both lag it alike).
    delay = lag_of(theirs, source)
    # CELT's memory of band energies goes on drifting through a reused pause, which the encoder did not
    # see: at the complexity we run, speech after it is within 0.5 dB; at 10, within 1 dB (0.7 measured).
    margin = 0.5 if complexity == COMPLEXITY else 1.0
    assert snr_db(source[speech_again:], ours[speech_again:], delay) > snr_db(source[speech_again:], theirs[speech_again:], delay) - margin


@pytest.mark.parametrize("use_libopus", BACKENDS)
def test_the_reused_cycle_is_the_one_libopus_settled_into(use_libopus: bool) -> None:
    encoder = InlineOpusEncoder(use_libopus=use_libopus)
    zeros = np.zeros(FRAME, np.int16)
    for frame in frames(utterance("Hello there.")):
        encoder.encode_payload(frame)
    encoded = []  # what libopus answered to the silence
    while (payload := encoder.encode_payload(zeros)) is not None and not encoder.frames_reused:
        encoded.append(payload)
    replayed = [payload] + [encoder.encode_payload(zeros) for _ in range(3 * MAX_SILENCE_CYCLE)]
    cycle = next(n for n in range(1, MAX_SILENCE_CYCLE + 1) if replayed[n:] == replayed[:-n])
    # libopus's last packets went round that cycle SILENCE_SETTLED times, and the replay goes on with it.
    assert encoded[-cycle * SILENCE_SETTLED :] == encoded[-cycle:] * SILENCE_SETTLED
    assert replayed == [encoded[-cycle:][i % cycle] for i in range(len(replayed))]
    assert len(set(replayed)) <= cycle


def test_speech_right_after_settling_is_encoded_and_silence_settles_again() -> None:
    encoder = InlineOpusEncoder()
    zeros = np.zeros(FRAME, np.int16)
    tone = (3000 * np.sin(np.arange(FRAME) * 2 * np.pi * 440 / 48_000)).astype(np.int16)
    for _ in range(80):
        encoder.encode_payload(zeros)
    settled = encoder.frames_reused
    assert settled > 0
    spoken = encoder.encode_payload(tone)
    assert spoken != encoder.encode_payload(zeros)  # speech went through libopus; silence did not reuse yet
    assert encoder.frames_reused == settled
    # libopus may take a while to answer zeros with its cycle again.
    for _ in range(150):
        encoder.encode_payload(zeros)
    assert encoder.frames_reused > settled + SILENCE_SETTLED
    encoder.close()
    with pytest.raises(RuntimeError):
        encoder.encode_payload(zeros)


def test_frames_within_near_silence_of_zero_are_sent_as_digital_silence() -> None:
    """What a loopback echoes of a muted microphone: decoded Opus silence, ones and twos."""
    rng = np.random.default_rng(5)
    whisper = rng.integers(-NEAR_SILENCE, NEAR_SILENCE + 1, size=(100, FRAME)).astype(np.int16)
    zeros = np.zeros(FRAME, np.int16)
    near, exact = InlineOpusEncoder(), InlineOpusEncoder()
    speech = frames(utterance("Hello there."))
    for frame in speech:
        assert near.encode_payload(frame) == exact.encode_payload(frame)
    # Exactly what digital silence gets: so the settled cycle is reused for it as well.
    assert [near.encode_payload(f) for f in whisper] == [exact.encode_payload(zeros) for _ in whisper]
    assert near.frames_reused == exact.frames_reused > 50
    # Anything louder is encoded as it is.
    faint = np.full(FRAME, NEAR_SILENCE + 1, np.int16)
    assert near.encode_payload(faint) != InlineOpusEncoder().encode_payload(zeros) and near.frames_reused == exact.frames_reused
