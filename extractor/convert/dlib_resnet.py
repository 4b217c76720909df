"""dlib's face recognition ResNet as an ONNX graph, read and built by our own code.

The extractor runs every model on onnxruntime, but the only registry-shipped 128-D facen model is
dlib's `dlib_face_recognition_resnet_model_v1.dat` (CC0, in `face_recognition_models`). dlib
itself is too slow for serving (about 170 ms a face on our CPUs) and no converter exists, so this
module reads dlib's `serialize()` stream (primitives in `dlib_format`, layout in
shared/notes/models.md) into plain arrays with `parse`, and `build_onnx` writes the equivalent
graph with `onnx.helper`. Parity with `dlib.compute_face_descriptor` is proved by
tests/extractor/test_dlib_resnet.py.

The ONNX contract: input "chip", uint8 [N, 150, 150, 3], an RGB face chip as
`dlib.get_face_chip(img, shape, size=150, padding=0.25)` cuts it, raw 0..255 values; output
"facen", float32 [N, 128], dlib's descriptor (not L2-normalised, same person: distance < 0.6).
The chip is uint8, as it is cut, so that a GPU run copies a quarter of the bytes a float32 chip
would take to the device; the graph's first node casts it to float32, which is exact, so the
descriptors are bit for bit those of a float32 input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from .dlib_format import DlibFormatError, DlibReader

F32 = npt.NDArray[np.float32]

OPSET = 17
# Opset 17 needs IR version 8; pinned so that older onnxruntime builds load the file too.
IR_VERSION = 8
INPUT_NAME = "chip"
OUTPUT_NAME = "facen"

# dlib's input layer subtracts the channel mean and divides by 256 (not by a deviation):
# `(pixel.red - avg_red) / 256.0` in input_rgb_image_sized::to_tensor.
INPUT_SCALE = 1.0 / 256.0

# Integer codes dlib writes for its enums.
_AFFINE_CONV_MODE = 0  # layer_mode::CONV_MODE: one gamma/beta per channel
_FC_NO_BIAS = 1  # fc_bias_mode::FC_NO_BIAS


class DlibResnetFormatError(DlibFormatError):
    """The file is truncated, garbled, or not the dlib face recognition ResNet this reads.

    Permanent: reading the same bytes again fails the same way.
    """


# --- The parsed network: one record per dlib layer, weights as float32 arrays. -----------------


@dataclass(frozen=True, eq=False)
class InputRGB:
    """input_rgb_image_sized: per-channel means (red, green, blue) and the chip size."""

    means: tuple[float, float, float]
    rows: int
    cols: int


@dataclass(frozen=True, eq=False)
class Conv:
    """con_: cross-correlation, like ONNX Conv. filters (out, in, rows, cols), biases (out,)."""

    filters: F32
    biases: F32 | None
    stride: tuple[int, int]  # (y, x)
    padding: tuple[int, int]  # (y, x), the same on both sides


@dataclass(frozen=True, eq=False)
class Affine:
    """affine_ in channel mode: y = gamma * x + beta (dlib's batch norm frozen for inference)."""

    gamma: F32
    beta: F32


@dataclass(frozen=True)
class Relu:
    pass


@dataclass(frozen=True)
class Pool:
    """max_pool_ / avg_pool_. size (0, 0) is dlib's "whole image" (avg_pool_everything)."""

    kind: Literal["max", "avg"]
    size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    @property
    def is_global(self) -> bool:
        return self.size == (0, 0)


@dataclass(frozen=True)
class AddPrev:
    """add_prev_: adds a tagged earlier output. Which tag is a template argument dlib never
    writes, so the wiring is recovered by `_wire`."""


@dataclass(frozen=True)
class Marker:
    """A tag or a skip layer. dlib writes only a version number for both, with no id."""


@dataclass(frozen=True, eq=False)
class FullyConnected:
    """fc_: y = x @ weights (+ biases), weights stored (inputs, outputs)."""

    weights: F32
    biases: F32 | None


Layer = Conv | Affine | Relu | Pool | AddPrev | Marker | FullyConnected


@dataclass(frozen=True, eq=False)
class DlibResnet:
    input: InputRGB
    layers: tuple[Layer, ...]  # from the input side up to the fc layer
    margin: float  # loss_metric_ training settings, kept for the record
    distance_threshold: float

    @property
    def facen_size(self) -> int:
        last = self.layers[-1]
        if not isinstance(last, FullyConnected):
            raise DlibResnetFormatError("the network does not end in an fc layer")
        return int(last.weights.shape[1])


# --- Reading. ----------------------------------------------------------------------------------

_LAYER_VERSION = 2  # add_layer over another layer
_MARKER_VERSION = 1  # add_tag_layer / add_skip_layer
_BOTTOM_LAYER_VERSION = 3  # add_layer over the input layer (version 3 adds an expansion factor)


def parse(dat: bytes) -> DlibResnet:
    """The layers of a serialized dlib `loss_metric` network such as the face recognition ResNet.

    Raises DlibResnetFormatError, with the byte position, on a truncated or garbled file.
    """
    reader = DlibReader(dat)
    try:
        net = _read_net(reader)
    except DlibResnetFormatError:
        raise
    except ValueError as e:
        # DlibFormatError from the reader, and numpy's reshape errors when garbled dimensions
        # happen to fit in the remaining bytes; UnicodeDecodeError is a ValueError too.
        raise DlibResnetFormatError(
            f"cannot read the dlib network at byte {reader.pos}: {e}"
        ) from e
    if reader.remaining:
        raise DlibResnetFormatError(f"{reader.remaining} unexpected bytes after the network")
    return net


def _read_net(reader: DlibReader) -> DlibResnet:
    # add_loss_layer writes its version and the loss details before the network under it.
    reader.expect_int(1, "loss layer version")
    _expect_name(reader, ("loss_metric_2",))
    margin = reader.read_float()
    distance_threshold = reader.read_float()

    # Then each add_layer writes its version, recurses into the layer below, and only then writes
    # its own details: the versions come top-down, the details bottom-up.
    versions: list[int] = []
    while True:
        version = reader.read_int()
        if version == _BOTTOM_LAYER_VERSION:
            break
        if version not in (_LAYER_VERSION, _MARKER_VERSION):
            raise DlibResnetFormatError(f"unknown layer version {version} at byte {reader.pos}")
        versions.append(version)

    input_layer = _read_input(reader)
    layers: list[Layer] = [_read_layer(reader)]
    _skip_layer_state(reader)
    # The bottom add_layer also keeps how many tensor samples one input makes.
    reader.expect_int(1, "sample expansion factor")
    for version in reversed(versions):
        if version == _MARKER_VERSION:
            layers.append(Marker())
        else:
            layers.append(_read_layer(reader))
            _skip_layer_state(reader)
    return DlibResnet(input_layer, tuple(layers), margin, distance_threshold)


def _expect_name(reader: DlibReader, names: tuple[str, ...]) -> str:
    at = reader.pos
    name = reader.read_string()
    if name not in names:
        raise DlibResnetFormatError(f"expected {' or '.join(names)} at byte {at}, got {name!r}")
    return name


def _read_input(reader: DlibReader) -> InputRGB:
    _expect_name(reader, ("input_rgb_image_sized",))
    red, green, blue = (reader.read_float() for _ in range(3))
    rows, cols = reader.read_int(), reader.read_int()
    return InputRGB((red, green, blue), rows, cols)


def _skip_layer_state(reader: DlibReader) -> None:
    """Training state after each layer's details: 3 flags, input gradient, output cache and
    parameter gradient (empty in a cleaned network, read whatever their size)."""
    for _ in range(3):
        reader.read_bool()
    for _ in range(3):
        reader.tensor()


def _alias_shape(reader: DlibReader) -> tuple[int, int, int, int]:
    """An alias_tensor: only its shape; dlib puts the aliases back to back in the params."""
    reader.expect_int(1, "alias tensor version")
    n, k, rows, cols = (reader.read_int() for _ in range(4))
    return n, k, rows, cols


def _check_size(what: str, got: int, wanted: int) -> None:
    if got != wanted:
        raise DlibResnetFormatError(f"{what}: {got} values, expected {wanted}")


def _read_layer(reader: DlibReader) -> Layer:
    name = _expect_name(
        reader,
        ("con_4", "con_5", "affine_", "relu_", "max_pool_2", "avg_pool_2", "add_prev_", "fc_2"),
    )
    if name in ("con_4", "con_5"):
        return _read_conv(reader, has_bias_flag=name == "con_5")
    if name == "affine_":
        return _read_affine(reader)
    if name == "relu_":
        return Relu()
    if name == "add_prev_":
        return AddPrev()
    if name == "fc_2":
        return _read_fc(reader)
    rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.read_int() for _ in range(6))
    kind: Literal["max", "avg"] = "max" if name == "max_pool_2" else "avg"
    return Pool(kind, (rows, cols), (stride_y, stride_x), (pad_y, pad_x))


def _read_conv(reader: DlibReader, *, has_bias_flag: bool) -> Conv:
    params = reader.tensor().ravel()
    num_filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (
        reader.read_int() for _ in range(7)
    )
    filters_shape = _alias_shape(reader)
    _alias_shape(reader)  # biases: (1, num_filters, 1, 1)
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        reader.read_float()
    use_bias = reader.read_bool() if has_bias_flag else True
    if filters_shape[0] != num_filters or filters_shape[2:] != (rows, cols):
        raise DlibResnetFormatError(f"conv filters {filters_shape} do not match the layer")
    filter_count = int(np.prod(filters_shape))
    bias_count = num_filters if use_bias else 0
    _check_size("conv parameters", params.size, filter_count + bias_count)
    filters = params[:filter_count].reshape(filters_shape)
    biases = params[filter_count:] if use_bias else None
    return Conv(filters, biases, (stride_y, stride_x), (pad_y, pad_x))


def _read_affine(reader: DlibReader) -> Affine:
    params = reader.tensor().ravel()
    gamma_shape = _alias_shape(reader)
    _alias_shape(reader)  # beta: the same shape as gamma
    mode = reader.read_int()
    if mode != _AFFINE_CONV_MODE:
        # The element-wise (fc) mode never occurs in this network.
        raise DlibResnetFormatError(f"affine layer mode {mode} is not supported")
    channels = gamma_shape[1]
    _check_size("affine parameters", params.size, 2 * channels)
    return Affine(params[:channels], params[channels:])


def _read_fc(reader: DlibReader) -> FullyConnected:
    outputs, inputs = reader.read_int(), reader.read_int()
    params = reader.tensor().ravel()
    weights_shape = _alias_shape(reader)
    _alias_shape(reader)  # biases: (1, outputs)
    bias_mode = reader.read_int()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.read_float()
    if weights_shape[:2] != (inputs, outputs):
        raise DlibResnetFormatError(f"fc weights {weights_shape} do not match {inputs}x{outputs}")
    has_bias = bias_mode != _FC_NO_BIAS
    _check_size("fc parameters", params.size, inputs * outputs + (outputs if has_bias else 0))
    weights = params[: inputs * outputs].reshape(inputs, outputs)
    return FullyConnected(weights, params[inputs * outputs :] if has_bias else None)


# --- Wiring: which tag each marker and add_prev stands for. ------------------------------------


@dataclass(frozen=True)
class _Tag:
    slot: int


@dataclass(frozen=True)
class _Skip:
    slot: int


@dataclass(frozen=True)
class _AddTagged:
    slot: int


_Op = Conv | Affine | Relu | Pool | FullyConnected | _Tag | _Skip | _AddTagged

# dlib's dnn_face_recognition_ex.cpp builds the network from a stem, two residual templates and
# a head. The file does not say which tag a skip or add_prev refers to (template arguments are
# not serialized), so the wiring comes from matching those templates against the sequence of
# layers, one letter per layer:
#   C con, A affine, R relu, M max pool, P avg pool, G global avg pool, T tag/skip, + add_prev, F fc
#   residual      = relu<add_prev1<block<tag1<x>>>>                     -> TCARCA+R
#   residual_down = relu<add_prev2<avg_pool<skip1<tag2<block<tag1<x>>>>>>> -> TCARCATTP+R
# Anything else is refused rather than guessed.
_RESIDUAL = "TCARCA+R"
_RESIDUAL_DOWN = "TCARCATTP+R"
_LAYOUT = re.compile(rf"CARM(?:{re.escape(_RESIDUAL)}|{re.escape(_RESIDUAL_DOWN)})+GF")


def _letter(layer: Layer) -> str:
    if isinstance(layer, Pool):
        if layer.is_global:
            return "G" if layer.kind == "avg" else "X"
        return "M" if layer.kind == "max" else "P"
    return {
        Conv: "C",
        Affine: "A",
        Relu: "R",
        AddPrev: "+",
        Marker: "T",
        FullyConnected: "F",
    }[type(layer)]


def _wire(layers: tuple[Layer, ...]) -> list[_Op]:
    letters = "".join(_letter(layer) for layer in layers)
    if not _LAYOUT.fullmatch(letters):
        raise DlibResnetFormatError(
            f"layer sequence {letters} is not dlib's face recognition ResNet layout"
        )
    ops: list[_Op] = []
    i = 0
    while i < len(layers):
        if letters.startswith(_RESIDUAL_DOWN, i):
            # tag1, block, tag2 (block output), skip1 (back to the block input), pool, add tag2.
            roles: dict[int, _Op] = {0: _Tag(1), 6: _Tag(2), 7: _Skip(1), 9: _AddTagged(2)}
            span = len(_RESIDUAL_DOWN)
        elif letters.startswith(_RESIDUAL, i):
            roles, span = {0: _Tag(1), 6: _AddTagged(1)}, len(_RESIDUAL)
        else:
            roles, span = {}, 1
        for offset, layer in enumerate(layers[i : i + span]):
            role = roles.get(offset)
            if role is not None:
                ops.append(role)
            else:
                assert not isinstance(layer, Marker | AddPrev), "the layout regex let one through"
                ops.append(layer)
        i += span
    return ops


def _fold(ops: list[_Op], input_scale: float) -> list[_Op]:
    """Fold each affine into the conv before it, and the input scale into the first conv.

    y = gamma * (W * x + b) + beta = (gamma W) * x + (gamma b + beta): one Conv instead of
    Conv, Mul, Add, and onnxruntime then fuses the following Relu as well. The input scale is
    1/256, a power of two, so scaling the stem filters instead of the input is exact.
    """
    folded: list[_Op] = []
    for op in ops:
        previous = folded[-1] if folded else None
        if isinstance(op, Affine) and isinstance(previous, Conv):
            if op.gamma.size != previous.filters.shape[0]:
                raise DlibResnetFormatError(
                    f"affine of {op.gamma.size} channels after a conv of "
                    f"{previous.filters.shape[0]} filters"
                )
            bias = previous.biases if previous.biases is not None else np.zeros_like(op.beta)
            folded[-1] = replace(
                previous,
                filters=(previous.filters * op.gamma[:, None, None, None]).astype(np.float32),
                biases=(bias * op.gamma + op.beta).astype(np.float32),
            )
        else:
            folded.append(op)
    stem = folded[0]
    if not isinstance(stem, Conv):
        raise DlibResnetFormatError("the network does not start with a conv layer")
    folded[0] = replace(stem, filters=(stem.filters * np.float32(input_scale)).astype(np.float32))
    return folded


# --- Building the ONNX graph. ------------------------------------------------------------------

Shape = tuple[int, int, int]  # (channels, rows, cols) of one sample


class _Graph:
    """Nodes and initializers in the making, with the static per-sample shape of each value."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shapes: dict[str, Shape] = {}
        self._count = 0

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def constant(self, prefix: str, array: npt.NDArray[np.generic]) -> str:
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(
        self,
        op_type: str,
        inputs: list[str],
        shape: Shape | None,
        output: str | None = None,
        **attributes: Any,  # ONNX attributes: ints, lists of ints
    ) -> str:
        output = output or self.fresh(op_type.lower())
        self.nodes.append(
            helper.make_node(op_type, inputs, [output], name=f"{output}_{op_type}", **attributes)
        )
        if shape is not None:
            self.shapes[output] = shape
        return output

    def conv(self, x: str, conv: Conv) -> str:
        out_channels, in_channels, rows, cols = conv.filters.shape
        channels, height, width = self.shapes[x]
        if in_channels != channels:
            raise DlibResnetFormatError(f"conv over {in_channels} channels gets {channels}")
        inputs = [x, self.constant("w", conv.filters)]
        if conv.biases is not None:
            inputs.append(self.constant("b", conv.biases))
        shape = (
            out_channels,
            _pooled(height, rows, conv.stride[0], conv.padding[0]),
            _pooled(width, cols, conv.stride[1], conv.padding[1]),
        )
        return self.node(
            "Conv",
            inputs,
            shape,
            kernel_shape=[rows, cols],
            strides=list(conv.stride),
            pads=[conv.padding[0], conv.padding[1], conv.padding[0], conv.padding[1]],
        )

    def affine(self, x: str, affine: Affine) -> str:
        scaled = self.node(
            "Mul", [x, self.constant("gamma", affine.gamma.reshape(1, -1, 1, 1))], self.shapes[x]
        )
        return self.node(
            "Add",
            [scaled, self.constant("beta", affine.beta.reshape(1, -1, 1, 1))],
            self.shapes[x],
        )

    def pool(self, x: str, pool: Pool) -> str:
        channels, height, width = self.shapes[x]
        if pool.is_global:
            op_type = "GlobalAveragePool" if pool.kind == "avg" else "GlobalMaxPool"
            return self.node(op_type, [x], (channels, 1, 1))
        shape = (
            channels,
            _pooled(height, pool.size[0], pool.stride[0], pool.padding[0]),
            _pooled(width, pool.size[1], pool.stride[1], pool.padding[1]),
        )
        attributes: dict[str, Any] = {
            "kernel_shape": list(pool.size),
            "strides": list(pool.stride),
            "pads": [pool.padding[0], pool.padding[1], pool.padding[0], pool.padding[1]],
        }
        if pool.kind == "avg":
            # dlib averages over the part of the window inside the image.
            attributes["count_include_pad"] = 0
        return self.node(
            "MaxPool" if pool.kind == "max" else "AveragePool", [x], shape, **attributes
        )

    def add_padded(self, a: str, b: str) -> str:
        """dlib's add of two tensors of different sizes: the output takes the larger size in each
        dimension and the smaller tensor counts as zero past its end (trailing channels, rows,
        columns), so each operand is zero-padded at the end first."""
        shape_a, shape_b = self.shapes[a], self.shapes[b]
        shape = (
            max(shape_a[0], shape_b[0]),
            max(shape_a[1], shape_b[1]),
            max(shape_a[2], shape_b[2]),
        )
        return self.node("Add", [self._pad_to(a, shape), self._pad_to(b, shape)], shape)

    def _pad_to(self, x: str, shape: Shape) -> str:
        have = self.shapes[x]
        if have == shape:
            return x
        pads = np.array(
            [0, 0, 0, 0, 0, *(w - h for w, h in zip(shape, have, strict=True))], dtype=np.int64
        )
        return self.node("Pad", [x, self.constant("pads", pads)], shape, mode="constant")


def _pooled(size: int, window: int, stride: int, padding: int) -> int:
    """Output length of a dlib conv or pool: 1 + (size + 2 padding - window) / stride, floored."""
    out = 1 + (size + 2 * padding - window) // stride
    if out < 1:
        raise DlibResnetFormatError(f"a window of {window} does not fit {size} values")
    return out


def build_onnx(dat: bytes, *, name: str = "dlib-resnet-v1", version: str = "1") -> onnx.ModelProto:
    """The dlib face recognition ResNet in `dat` as an ONNX model (contract: module docstring)."""
    net = parse(dat)
    graph = _Graph()
    rows, cols = net.input.rows, net.input.cols

    # NHWC uint8 RGB in, as chips come from OpenCV/dlib; dlib's tensor is NCHW float32. Every
    # uint8 value is a float32 exactly, so casting first changes no result.
    x = graph.node("Cast", [INPUT_NAME], None, to=TensorProto.FLOAT)
    x = graph.node("Transpose", [x], None, perm=[0, 3, 1, 2])
    means = np.array(net.input.means, dtype=np.float32).reshape(1, 3, 1, 1)
    # The mean is subtracted here (float32, like dlib) rather than folded into the stem bias: the
    # stem conv is unpadded so folding would be exact algebraically, but not in rounding.
    x = graph.node("Sub", [x, graph.constant("mean", means)], (3, rows, cols))

    tagged: dict[int, str] = {}
    ops = _fold(_wire(net.layers), INPUT_SCALE)
    for op in ops:
        if isinstance(op, Conv):
            x = graph.conv(x, op)
        elif isinstance(op, Affine):
            x = graph.affine(x, op)
        elif isinstance(op, Relu):
            x = graph.node("Relu", [x], graph.shapes[x])
        elif isinstance(op, Pool):
            x = graph.pool(x, op)
        elif isinstance(op, _Tag):
            tagged[op.slot] = x
        elif isinstance(op, _Skip):
            x = tagged[op.slot]
        elif isinstance(op, _AddTagged):
            x = graph.add_padded(x, tagged[op.slot])
        else:
            # dlib flattens (k, rows, cols) row-major per sample, as ONNX Flatten does for NCHW.
            flat = graph.node("Flatten", [x], None, axis=1)
            out = OUTPUT_NAME if op.biases is None else None
            x = graph.node("MatMul", [flat, graph.constant("fc", op.weights)], None, output=out)
            if op.biases is not None:
                x = graph.node(
                    "Add", [x, graph.constant("fc_bias", op.biases)], None, output=OUTPUT_NAME
                )

    onnx_graph = helper.make_graph(
        graph.nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", rows, cols, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", net.facen_size])],
        graph.initializers,
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="facegrid",
        doc_string=(
            "dlib_face_recognition_resnet_model_v1 converted by facegrid.extractor.convert."
            "dlib_resnet: chip = dlib.get_face_chip(img, shape5, size=150, padding=0.25) as "
            "uint8 NHWC RGB 0..255; facen = dlib.compute_face_descriptor (not L2-normalised)."
        ),
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            "name": name,
            "version": version,
            "facen_size": str(net.facen_size),
            "distance_threshold": f"{net.distance_threshold:.6g}",
            "chip_size": str(rows),
            "chip_padding": "0.25",
        },
    )
    onnx.checker.check_model(model)
    return model
