"""media.stt_feed: a turn's audio reaches STT in order, a pause's only if speech resumes, and nothing of the
next turn before the ended one's finish_turn has begun."""

from __future__ import annotations

import numpy as np

from media.stt_feed import SttFeed


def chunk(value: int) -> np.ndarray:
    return np.full(4, value, np.int16)


def values(pushed: list[bytes]) -> list[int]:
    return [int(np.frombuffer(pcm, np.int16)[0]) for pcm in pushed]


def test_only_a_turns_audio_is_fed_and_a_pause_only_if_speech_resumes() -> None:
    pushed: list[bytes] = []
    feed = SttFeed(pushed.append)
    feed.hear(chunk(1))  # before any turn: not fed
    feed.start_turn(chunk(2).tobytes())
    feed.hear(chunk(3))
    feed.pause()
    feed.hear(chunk(4))
    feed.hear(chunk(5))
    assert values(pushed) == [2, 3]  # the pause's audio is held
    feed.resume()
    feed.hear(chunk(6))
    assert values(pushed) == [2, 3, 4, 5, 6]
    feed.pause()
    feed.hear(chunk(7))
    assert feed.end_turn(end_sample=40) == [] and feed.fed_until == 40
    feed.hear(chunk(8))  # after the turn: not fed; the held pause is dropped with the turn
    assert values(pushed) == [2, 3, 4, 5, 6]


def test_the_next_turn_waits_until_the_ended_one_is_closing() -> None:
    pushed: list[bytes] = []
    feed = SttFeed(pushed.append)
    feed.start_turn(chunk(1).tobytes())
    assert feed.end_turn(end_sample=4) == [] and feed.closing
    feed.start_turn(chunk(2).tobytes())  # spoke again before the first turn's finish_turn began
    feed.hear(chunk(3))
    assert values(pushed) == [1]
    carry = feed.end_turn(end_sample=12)  # the second turn ended too: its audio is its closing's to push
    assert values(carry) == [2, 3]
    feed.turn_closed()
    feed.start_turn(chunk(4).tobytes())
    assert values(pushed) == [1]  # the second turn is still closing
    feed.turn_closed()
    feed.hear(chunk(5))
    assert values(pushed) == [1, 4, 5] and not feed.closing  # kept audio first, then what follows
