"""media.vad_graph: the rebuilt Silero graph computes the shipped model for a batch of streams, each
with its own state, and what one stream gets does not depend on which others share its run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from media.vad import MODEL_PATH, load_session
from media.vad_batch import stream_session
from media.vad_graph import stream_model_bytes

ROW = 576


def random_batch(streams: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "input": (rng.standard_normal((streams, ROW)) * 0.1).astype(np.float32),
        "h": (rng.standard_normal((1, streams, 128)) * 0.3).astype(np.float32),
        "c": (rng.standard_normal((1, streams, 128)) * 0.3).astype(np.float32),
    }


def one_stream(feed: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    return {"input": feed["input"][k : k + 1], "h": feed["h"][:, k : k + 1], "c": feed["c"][:, k : k + 1]}


def test_each_stream_gets_the_shipped_models_answer_and_state() -> None:
    feed = random_batch(6, seed=5)
    probabilities, hn, cn = stream_session().run(None, feed)
    shipped = load_session()
    for k in range(6):
        p1, h1, c1 = shipped.run(None, one_stream(feed, k))
        np.testing.assert_allclose(probabilities[k], p1[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(hn[0, k], h1[0, 0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(cn[0, k], c1[0, 0], rtol=0, atol=1e-5)
    # The shipped graph runs the rows as one stream's time steps: not what a batch of streams must get.
    as_time, _, _ = shipped.run(None, {"input": feed["input"], "h": feed["h"][:, :1], "c": feed["c"][:, :1]})
    assert np.abs(as_time[1:] - probabilities[1:]).max() > 1e-3


def test_a_streams_answer_is_the_same_whoever_shares_its_run() -> None:
    feed = random_batch(33, seed=9)
    session = stream_session()
    together = session.run(None, feed)
    for size in (1, 2, 7, 16):
        for k in range(0, 33, 5):
            # stream k first, then `size - 1` others from the end: a different batch every time
            picked = [k, *range(33 - size + 1, 33)][:size]
            part = session.run(None, {name: value[picked] if name == "input" else value[:, picked] for name, value in feed.items()})
            assert part[0][0] == together[0][k]  # bit for bit
            assert np.array_equal(part[1][0, 0], together[1][0, k]) and np.array_equal(part[2][0, 0], together[2][0, k])


def test_a_graph_shaped_otherwise_is_refused(tmp_path: Path) -> None:
    model = onnx.load(MODEL_PATH)
    conv = next(node for node in model.graph.node if node.name == "/encoder/conv_layers.1/Conv")
    strides = next(attr for attr in conv.attribute if attr.name == "strides")
    del strides.ints[:]
    strides.ints.append(1)
    changed = tmp_path / "stride.onnx"
    onnx.save(model, changed)
    with pytest.raises(RuntimeError, match="stride"):
        stream_model_bytes(str(changed))

    model = onnx.load(MODEL_PATH)
    pads = next(init for init in model.graph.initializer if init.name == "/encoder/feature_extractor/padding/Reshape_1_output_0")
    pads.CopyFrom(numpy_helper.from_array(np.array([0, 64, 0, 64], np.int64), pads.name))
    changed = tmp_path / "pads.onnx"
    onnx.save(model, changed)
    with pytest.raises(RuntimeError, match="padding"):
        stream_model_bytes(str(changed))
