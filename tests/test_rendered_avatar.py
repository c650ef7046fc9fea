"""The offline avatar renderer: frame layout, mouth, blink, states, YUV conversion, mouth follower."""

from __future__ import annotations

import itertools

import av
import numpy as np
import pytest

from agent_bridge.mouth_follower import MouthFollower
from agent_bridge.rendered_avatar import STATES, AvatarLook, RenderedAvatar
from agent_bridge.yuv import yuv420p

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms


@pytest.fixture(scope="module")
def avatar() -> RenderedAvatar:
    return RenderedAvatar(AvatarLook())


def mouth_pixels(avatar: RenderedAvatar, frame: np.ndarray) -> int:
    look = avatar.look
    is_mouth = np.all(frame == look.mouth, axis=-1) | np.all(frame == look.tongue, axis=-1)
    return int(is_mouth.sum())


def eyes_open_time(avatar: RenderedAvatar) -> float:
    return next(t for t in np.arange(0.0, 10.0, 0.01) if not avatar.is_blinking(float(t)))


def tone(rms: float, n: int = FRAME_SAMPLES, start: int = 0) -> np.ndarray:
    t = (np.arange(n) + start) / SAMPLE_RATE
    return (np.sin(2 * np.pi * 220.0 * t) * rms * np.sqrt(2)).astype(np.int16)


def silence(n: int = FRAME_SAMPLES) -> np.ndarray:
    return np.zeros(n, dtype=np.int16)



# Frame layout


@pytest.mark.parametrize("size", [(320, 240), (640, 480), (160, 120), (256, 256)])
def test_frames_have_the_right_shape_and_dtype(size: tuple[int, int]) -> None:
    width, height = size
    avatar = RenderedAvatar(AvatarLook(width=width, height=height))
    rgb = avatar.frame(0.5, "speaking", 0.0)
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
    yuv = avatar.frame_yuv420p(0.5, "speaking", 0.0)
    assert yuv.shape == (height * 3 // 2, width) and yuv.dtype == np.uint8
    assert mouth_pixels(avatar, avatar.frame(1.0, "speaking", 0.0)) > mouth_pixels(avatar, rgb)


def test_odd_sizes_are_rejected() -> None:
    with pytest.raises(ValueError):
        AvatarLook(width=321, height=240)
    with pytest.raises(ValueError):
        AvatarLook(width=320, height=16)


def test_frames_do_not_alias_the_cached_base(avatar: RenderedAvatar) -> None:
    first = avatar.frame(0.0, "idle", 0.0)
    first[:] = 0
    assert avatar.frame(0.0, "idle", 0.0).any()
    first_yuv = avatar.frame_yuv420p(0.0, "idle", 0.0)
    first_yuv[:] = 0
    assert avatar.frame_yuv420p(0.0, "idle", 0.0).any()


# Mouth


def test_mouth_area_grows_with_openness(avatar: RenderedAvatar) -> None:
    t = eyes_open_time(avatar)
    counts = [mouth_pixels(avatar, avatar.frame(o, "speaking", t)) for o in np.linspace(0.0, 1.0, 11)]
    assert counts[0] > 0, "a closed mouth is still drawn as a line"
    assert all(a < b for a, b in itertools.pairwise(counts)), counts
    assert counts[-1] > 10 * counts[0]


def test_only_the_mouth_region_changes(avatar: RenderedAvatar) -> None:
    t = eyes_open_time(avatar)
    closed = avatar.frame(0.0, "speaking", t)
    wide = avatar.frame(1.0, "speaking", t)
    rows, cols = np.nonzero(np.any(closed != wide, axis=-1))
    height, width = closed.shape[:2]
    assert rows.size > 0
    assert rows.min() > height * 0.5 and rows.max() < height * 0.9  # lower face only
    assert cols.min() > width * 0.3 and cols.max() < width * 0.7


def test_openness_is_clamped(avatar: RenderedAvatar) -> None:
    np.testing.assert_array_equal(avatar.frame(-0.5, "idle", 0.0), avatar.frame(0.0, "idle", 0.0))
    np.testing.assert_array_equal(avatar.frame(3.0, "idle", 0.0), avatar.frame(1.0, "idle", 0.0))


# Blink


def blink_spans(avatar: RenderedAvatar, until: float, step: float = 0.005) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    start = None
    for t in np.arange(0.0, until, step):
        blinking = avatar.is_blinking(float(t))
        if blinking and start is None:
            start = float(t)
        elif not blinking and start is not None:
            spans.append((start, float(t)))
            start = None
    return spans


def test_blinks_every_three_to_five_seconds_for_about_150_ms(avatar: RenderedAvatar) -> None:
    spans = blink_spans(avatar, 120.0)
    assert 24 <= len(spans) <= 40
    for start, end in spans:
        assert 0.13 <= end - start <= 0.17
    gaps = np.diff([start for start, _ in spans])
    assert gaps.min() >= 2.9 and gaps.max() <= 5.1
    assert gaps.std() > 0.1, "blinks at a fixed period look mechanical"


def test_blink_is_deterministic_and_visible(avatar: RenderedAvatar) -> None:
    other = RenderedAvatar(AvatarLook())
    assert blink_spans(avatar, 30.0) == blink_spans(other, 30.0)
    start, end = blink_spans(avatar, 30.0)[0]
    middle = (start + end) / 2
    open_t = eyes_open_time(avatar)
    closed_eyes = avatar.frame(0.3, "listening", middle)
    open_eyes = avatar.frame(0.3, "listening", open_t)
    np.testing.assert_array_equal(closed_eyes, other.frame(0.3, "listening", middle))
    rows = np.nonzero(np.any(closed_eyes != open_eyes, axis=-1))[0]
    height = closed_eyes.shape[0]
    assert rows.size > 0 and rows.min() > height * 0.3 and rows.max() < height * 0.5  # eye band only
    # Dark eye pixels mostly vanish when the lids are shut.
    eye = np.asarray(avatar.look.eye)

    def dark(img: np.ndarray) -> int:
        return int((np.abs(img.astype(int) - eye).sum(axis=-1) < 30).sum())

    assert dark(closed_eyes) < dark(open_eyes) * 0.5


# States


def test_states_look_different(avatar: RenderedAvatar) -> None:
    t = eyes_open_time(avatar)
    frames = {state: avatar.frame(0.0, state, t) for state in STATES}
    for a in STATES:
        for b in STATES:
            if a < b:
                changed = np.any(frames[a] != frames[b], axis=-1)
                assert changed.sum() > 20, (a, b)
                # Subtle: well under a tenth of the picture.
                assert changed.mean() < 0.1, (a, b)


def test_unknown_state_is_rejected(avatar: RenderedAvatar) -> None:
    with pytest.raises(ValueError):
        avatar.frame(0.0, "thinking", 0.0)
    with pytest.raises(ValueError):
        avatar.frame_yuv420p(0.0, "thinking", 0.0)


# YUV


def float_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """Straightforward BT.601 limited-range conversion with 2x2 chroma averaging, in float64."""
    f = rgb.astype(np.float64)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    h, w = y.shape

    def half(plane: np.ndarray) -> np.ndarray:
        return plane.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    planes = np.concatenate([y.ravel(), half(u).ravel(), half(v).ravel()])
    return np.round(planes).reshape(h * 3 // 2, w)


def swscale_yuv420p(rgb: np.ndarray) -> np.ndarray:
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()


def test_yuv420p_matches_a_float_reference() -> None:
    rgb = np.random.default_rng(7).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    diff = np.abs(yuv420p(rgb).astype(int) - float_yuv420p(rgb))
    assert diff.max() <= 1


def test_yuv420p_matches_swscale(avatar: RenderedAvatar) -> None:
    h, w = 240, 320
    gradient = np.zeros((h, w, 3), dtype=np.uint8)
    gradient[..., 0] = np.linspace(0, 255, w).astype(np.uint8)[None, :]
    gradient[..., 1] = np.linspace(0, 255, h).astype(np.uint8)[:, None]
    gradient[..., 2] = 255 - gradient[..., 0]
    assert np.abs(yuv420p(gradient).astype(int) - swscale_yuv420p(gradient)).max() <= 1
    # On the face, luma agrees to 1; swscale's chroma filter differs from a box average only on
    # hard edges, so chroma agrees on average.
    face = avatar.frame(0.6, "speaking", 0.0)
    diff = np.abs(yuv420p(face).astype(int) - swscale_yuv420p(face))
    assert diff[:h].max() <= 1
    assert diff[h:].mean() < 0.5


def test_yuv420p_feeds_pyav(avatar: RenderedAvatar) -> None:
    frame = av.VideoFrame.from_ndarray(avatar.frame_yuv420p(0.5, "speaking", 0.0), format="yuv420p")
    assert (frame.width, frame.height, frame.format.name) == (320, 240, "yuv420p")
    back = frame.to_ndarray(format="rgb24").astype(int)
    assert np.abs(back - avatar.frame(0.5, "speaking", 0.0)).mean() < 2.0


def test_direct_yuv_rendering_matches_converted_rgb(avatar: RenderedAvatar) -> None:
    blink = blink_spans(avatar, 10.0)[0]
    for state in STATES:
        for t in (0.0, blink[0] + 0.005, (blink[0] + blink[1]) / 2):
            for o in np.linspace(0.0, 1.0, 6):
                direct = avatar.frame_yuv420p(o, state, t).astype(int)
                converted = yuv420p(avatar.frame(o, state, t)).astype(int)
                assert np.abs(direct - converted).max() <= 2, (state, t, o)



# Mouth follower


def feed(follower: MouthFollower, chunks: list[np.ndarray]) -> list[float]:
    values = []
    for chunk in chunks:
        follower.push(chunk)
        values.append(follower.openness())
    return values


def test_silence_and_faint_noise_keep_the_mouth_shut() -> None:
    follower = MouthFollower()
    assert follower.openness() == 0.0
    assert feed(follower, [silence()] * 10) == [0.0] * 10
    noise = np.random.default_rng(1).normal(0, 100, FRAME_SAMPLES).astype(np.int16)
    assert max(feed(follower, [noise] * 10)) == 0.0


def test_speech_levels_open_the_mouth_in_proportion() -> None:
    levels = {}
    for rms in (800, 1500, 3000, 5000, 12000):
        follower = MouthFollower()
        levels[rms] = feed(follower, [tone(rms, start=i * FRAME_SAMPLES) for i in range(10)])[-1]
    assert levels[1500] >= 0.4
    assert levels[5000] >= 0.95
    assert levels[12000] > 0.99
    assert levels[800] < levels[1500] < levels[3000] < levels[5000]


def test_attack_is_fast_and_release_returns_to_zero() -> None:
    follower = MouthFollower()
    opened = feed(follower, [tone(4000, start=i * FRAME_SAMPLES) for i in range(3)])
    assert opened[1] > 0.4, opened  # within 40 ms
    feed(follower, [tone(4000, start=i * FRAME_SAMPLES) for i in range(3, 25)])
    closing = feed(follower, [silence()] * 15)  # 300 ms
    assert closing[2] < opened[-1], "starts closing at once"
    assert all(a >= b for a, b in itertools.pairwise(closing))
    assert closing[-1] < 0.05
    assert feed(follower, [silence()] * 5)[-1] == 0.0


def test_syllables_move_the_mouth() -> None:
    follower = MouthFollower()
    # 100 ms voiced, 100 ms pause: the mouth should visibly open and close with each syllable.
    chunks = [tone(3000, start=i * FRAME_SAMPLES) if (i // 5) % 2 == 0 else silence() for i in range(40)]
    values = feed(follower, chunks)[10:]
    assert max(values) > 0.7 and min(values) < 0.3


def test_follower_accepts_other_chunk_sizes_and_resets() -> None:
    follower = MouthFollower()
    feed(follower, [tone(3000, n=480, start=i * 480) for i in range(10)])
    assert follower.openness() > 0.5
    follower.push(np.zeros(0, dtype=np.int16))
    follower.push(tone(3000, n=960).reshape(1, -1))  # PyAV's packed mono layout
    assert follower.openness() > 0.5
    follower.reset()
    assert follower.openness() == 0.0
    follower.push(silence())
    assert follower.openness() == 0.0


