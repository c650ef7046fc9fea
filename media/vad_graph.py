"""Silero's model rebuilt for a batch of streams: every layer one matrix product over all the windows.

The graph faster-whisper ships runs one stream's windows through its LSTM as time steps (batch 1),
and ONNX Runtime runs its 1-D convolutions window by window: a product of 4 frames per window per
layer, too thin to be fast. `stream_model_bytes` derives, at load and from that same file and its
weights, a graph that computes the same function for a batch of streams, one window each:

- the STFT convolution (kernel 256, stride 128) becomes the window's 4 frames of 256 samples, cut
  from its 5 blocks of 128, times the basis: one product with rows = 4 x streams;
- each encoder convolution (kernel 3, zero padding 1) becomes its taps side by side, times the
  weights laid out to match: again one product for all streams' frames;
- the LSTM takes the streams as its batch, one time step, each with its own state (h, c of shape
  [1, streams, 128]).

The sums run in another order than the shipped graph's, so probabilities agree with it to about
1e-6, not bit for bit (tests/test_vad_graph.py). In runs of 16 windows a window costs ~18 us,
against ~57 us through the shipped layers batched the same way (bench/vad_cost.py).

Any file not shaped as this expects (layers, kernel sizes, strides, padding, the magnitude's split)
is refused rather than misread.
"""

from __future__ import annotations

import numpy as np

from media.vad import CONTEXT_SAMPLES, MODEL_PATH, WINDOW_SAMPLES

_HIDDEN = 128
_HOP = 128  # the STFT's stride; its kernel is two hops
_FRAMES = 4  # STFT frames of a window the model uses (the first of the 5 it computes is dropped)
_BINS = 129
# The shipped graph's layers, in order, with what this rebuild assumes of each.
_ENCODER = [  # (weight, bias, stride): kernel 3, zero padding 1
    ("encoder.conv_layers.0.weight", "encoder.conv_layers.0.bias", 1),
    ("encoder.conv_layers.1.weight", "encoder.conv_layers.1.bias", 2),
    ("encoder.conv_layers.2.weight", "encoder.conv_layers.2.bias", 2),
    ("encoder.conv_layers.3.weight", "encoder.conv_layers.3.bias", 1),
]
_SHIPPED_OPS = [
    "Pad", "Unsqueeze", "Conv", "Slice", "Slice", "Pow", "Pow", "Add", "Sqrt",
    "Conv", "Relu", "Conv", "Relu", "Conv", "Relu", "Conv", "Relu",
    "Transpose", "LSTM", "Squeeze", "Relu", "Transpose", "Conv", "Sigmoid", "Reshape",
]  # fmt: skip


class _Builder:
    """Nodes and constants of the new graph, each named after the step that makes it."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.constants: list = []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.constants.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def ints(self, name: str, values: list[int]) -> str:
        return self.const(name, np.array(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: object) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def time_slice(self, x: str, start: int, end: int, step: int, name: str) -> str:
        """x[:, start:end:step, :] of a [streams, time, channels] tensor."""
        return self.slice(x, start, end, axis=1, name=name, step=step)

    def slice(self, x: str, start: int, end: int, *, axis: int, name: str, step: int = 1) -> str:
        bounds = [self.ints(f"{name}.{what}", [value]) for what, value in (("start", start), ("end", end))]
        return self.op("Slice", [x, *bounds, self.ints(f"{name}.axis", [axis]), self.ints(f"{name}.step", [step])], name)

    def conv(self, x: str, length: int, weight: np.ndarray, bias: np.ndarray, *, stride: int, name: str) -> tuple[str, int]:
        """Conv1d (kernel 3, zero padding 1) + ReLU on [streams, time, channels], as one product."""
        taps = weight.shape[2]
        padded = self.op("Pad", [x, self.ints(f"{name}.pads", [0, 1, 0, 0, 1, 0])], f"{name}.padded")
        out_length = (length + 2 - taps) // stride + 1
        span = stride * (out_length - 1) + 1
        columns = [self.time_slice(padded, tap, tap + span, stride, f"{name}.tap{tap}") for tap in range(taps)]
        stacked = self.op("Concat", columns, f"{name}.columns", axis=2)  # [streams, out, taps x channels]
        # Rows of the product in the columns' order: tap-major, then input channel.
        matrix = weight.transpose(2, 1, 0).reshape(-1, weight.shape[0])
        product = self.op("MatMul", [stacked, self.const(f"{name}.weight", matrix)], f"{name}.product")
        summed = self.op("Add", [product, self.const(f"{name}.bias", bias)], f"{name}.sum")
        return self.op("Relu", [summed], f"{name}.relu"), out_length


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"Silero graph: {what}; this rebuild does not apply to it")


def _attribute(node: object, name: str) -> object:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)  # type: ignore[attr-defined]


def stream_model_bytes(path: str = MODEL_PATH) -> bytes:
    """The shipped Silero model as a graph over a batch of streams (see the module's docstring)."""
    import onnx  # only at load: the rebuild needs the graph's protobuf, the runtime does not
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(path)
    shipped = model.graph
    weights = {init.name: numpy_helper.to_array(init) for init in shipped.initializer}
    _check([node.op_type for node in shipped.node] == _SHIPPED_OPS, "its layers are not the expected ones")
    by_type = {op: [n for n in shipped.node if n.op_type == op] for op in ("Pad", "Conv", "LSTM", "Slice")}
    pad, stft, lstm = by_type["Pad"][0], by_type["Conv"][0], by_type["LSTM"][0]
    _check(_attribute(pad, "mode") == b"reflect", "the input is not reflect-padded")
    _check(list(weights[pad.input[1]]) == [0, _HOP, 0, _HOP], "the input padding is not one hop each side")
    basis = weights[stft.input[1]]
    _check(basis.shape == (2 * _BINS, 1, 2 * _HOP), f"STFT basis of shape {basis.shape}")
    _check(list(_attribute(stft, "strides")) == [_HOP], "the STFT's stride is not one hop")  # type: ignore[arg-type]
    bounds = [[list(weights[name]) for name in node.input[1:3]] for node in by_type["Slice"]]
    _check(bounds[0][0] == [0, 1] and bounds[0][1][0] == _BINS and bounds[1][0] == [_BINS, 1], "magnitude split")
    for conv, (weight, bias, stride) in zip(by_type["Conv"][1:5], _ENCODER, strict=True):
        _check(list(conv.input[1:]) == [weight, bias], f"encoder layer {conv.name} has other weights")
        _check(list(_attribute(conv, "strides")) == [stride], f"{conv.name}: stride")  # type: ignore[arg-type]
        kernel = weights[weight].shape[2]
        _check(list(_attribute(conv, "pads")) == [1, 1] and kernel == 3, f"{conv.name}: kernel")  # type: ignore[arg-type]
    _check(_attribute(lstm, "hidden_size") == _HIDDEN, "the LSTM is not 128 wide")
    decoder = by_type["Conv"][5]
    _check(weights[decoder.input[1]].shape == (1, _HIDDEN, 1), "the decoder is not a 1x1 convolution to one output")

    b = _Builder()
    padded = b.op("Pad", ["input", b.const("input.pads", weights[pad.input[1]])], "input.padded", mode="reflect")
    # Frames 1..4 of the shipped STFT cover padded samples [hop, 6 hops): 5 blocks of one hop.
    used = b.slice(padded, _HOP, (_FRAMES + 2) * _HOP, axis=1, name="used")
    blocks = b.op("Reshape", [used, b.ints("blocks.shape", [0, _FRAMES + 1, _HOP])], "blocks")
    halves = [b.time_slice(blocks, first, first + _FRAMES, 1, f"blocks.from{first}") for first in (0, 1)]
    frames = b.op("Concat", halves, "frames", axis=2)  # [streams, 4, 256]
    spectrum = b.op("MatMul", [frames, b.const("stft.basis", basis[:, 0, :].T)], "spectrum")  # [streams, 4, 258]
    two = b.const("two", np.array(2.0, np.float32))
    squares = [
        b.op("Pow", [b.slice(spectrum, lo, hi, axis=2, name=part), two], f"{part}.squared")
        for part, lo, hi in (("real", 0, _BINS), ("imaginary", _BINS, 2 * _BINS))
    ]
    power = b.op("Add", squares, "power")
    features, length = b.op("Sqrt", [power], "magnitude"), _FRAMES  # [streams, 4, 129]
    for index, (weight, bias, stride) in enumerate(_ENCODER):
        features, length = b.conv(features, length, weights[weight], weights[bias], stride=stride, name=f"encoder{index}")
    _check(length == 1, "the encoder does not end in one step")
    steps = b.op("Transpose", [features], "steps", perm=[1, 0, 2])  # [1, streams, 128]: one step, a batch of streams
    lstm_outputs = ["lstm.out", "hn", "cn"]
    b.nodes.append(helper.make_node("LSTM", [steps, *lstm.input[1:]], lstm_outputs, name="lstm", hidden_size=_HIDDEN))
    for name in lstm.input[1:4]:
        b.const(name, weights[name])
    hidden = b.op("Relu", [b.op("Squeeze", ["lstm.out", b.ints("lstm.axes", [0, 1])], "lstm.hidden")], "decoder.relu")
    logit = b.op("MatMul", [hidden, b.const("decoder.weight", weights[decoder.input[1]][:, :, 0].T)], "decoder.product")
    logit = b.op("Add", [logit, b.const("decoder.bias", weights[decoder.input[2]])], "decoder.sum")
    probability = b.op("Sigmoid", [logit], "decoder.sigmoid")
    flat = b.ints("probs.shape", [-1])
    b.nodes.append(helper.make_node("Reshape", [probability, flat], ["speech_probs"], name="probs"))

    row = CONTEXT_SAMPLES + WINDOW_SAMPLES
    state = [1, "streams", _HIDDEN]
    inputs = {"input": ["streams", row], "h": state, "c": state}
    outputs = {"speech_probs": ["streams"], "hn": state, "cn": state}
    graph = helper.make_graph(
        b.nodes,
        "silero_streams",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs.items()],
        b.constants,
    )
    rebuilt = helper.make_model(graph, opset_imports=list(model.opset_import))
    rebuilt.ir_version = model.ir_version
    onnx.checker.check_model(rebuilt)
    return rebuilt.SerializeToString()
