"""The outbound sample queue: exact frames, exact counts, marks that fire when their sample leaves."""

from __future__ import annotations

import numpy as np
import pytest

from media.audio_buffer import SampleQueue


def test_frames_are_exact_and_padded() -> None:
    queue = SampleQueue()
    queue.push(np.arange(1, 1501, dtype=np.int16))
    first, real = queue.pop(960)
    assert real == 960 and first[0] == 1 and first[-1] == 960
    second, real = queue.pop(960)
    assert real == 540 and second[539] == 1500 and not second[540:].any()
    third, real = queue.pop(960)
    assert real == 0 and not third.any()
    assert queue.sent_total == 1500 and queue.pushed_total == 1500 and len(queue) == 0


def test_marks_fire_when_their_sample_is_popped_and_never_after_clear() -> None:
    queue = SampleQueue()
    fired: list[str] = []
    queue.push(np.ones(500, np.int16))
    position = queue.push(np.ones(1000, np.int16))
    assert position == 500
    queue.when_sent(position, lambda: fired.append("reply"))
    queue.pop(480)
    assert fired == []
    queue.pop(480)  # samples 480..959: includes 500
    assert fired == ["reply"]
    later = queue.push(np.ones(10, np.int16))
    queue.when_sent(later, lambda: fired.append("dropped"))
    assert queue.clear() == 550
    queue.pop(960)
    assert fired == ["reply"]
    queue.when_sent(0, lambda: fired.append("past"))  # already gone: fires at once
    assert fired == ["reply", "past"]


def test_rejects_wrong_dtype() -> None:
    with pytest.raises(ValueError):
        SampleQueue().push(np.zeros(10, np.float32))
