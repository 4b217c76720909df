"""Our dlib ResNet reader and ONNX graph give dlib's own face descriptors, on real faces.

dlib-bin is the reference: its HOG detector and 5-point predictor find the faces, its
`get_face_chip` cuts the chip our graph takes, and `compute_face_descriptor` gives the vector it
must reproduce.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest

from facegrid.extractor.convert import dlib_resnet
from facegrid.extractor.convert.dlib_format import DlibFormatError
from facegrid.extractor.core.engine import Engine
from facegrid.files import sha256_of

# The converted graph has repeatedly come within 3e-7 of dlib; 1e-4 leaves room for other CPUs'
# kernels while still catching any wrong layer (those move descriptors by 1e-2 and more).
PARITY_TOLERANCE = 1e-4
SAME_PERSON_DISTANCE = 0.6  # dlib's published threshold for this model


@dataclass(frozen=True)
class Face:
    photo: str
    chip: npt.NDArray[np.uint8]  # 150x150x3 RGB, as dlib.get_face_chip cuts it
    reference: npt.NDArray[np.float64]  # dlib.compute_face_descriptor on the same face


@pytest.fixture(scope="module")
def model(resnet_dat: bytes) -> onnx.ModelProto:
    return dlib_resnet.build_onnx(resnet_dat)


@pytest.fixture(scope="module")
def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the test machines are shared; one core is plenty here
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


@pytest.fixture(scope="module")
def faces(
    dlib_models: dict[str, Any], face_photos: list[tuple[str, npt.NDArray[np.uint8]]]
) -> list[Face]:
    dlib = dlib_models["dlib"]
    found = []
    for name, image in face_photos:
        for box in dlib_models["detector"](image, 1):
            shape = dlib_models["shape5"](image, box)
            chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
            reference = dlib_models["facerec"].compute_face_descriptor(image, shape)
            found.append(Face(name, np.asarray(chip), np.array(reference, dtype=np.float64)))
    return found


def facens(session: ort.InferenceSession, chips: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    (out,) = session.run(["facen"], {"chip": chips})
    return np.asarray(out)


def float_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph as it was before it took uint8: the same nodes without the first Cast, fed
    float32 chips."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    cast = copy.graph.node[0]
    assert cast.op_type == "Cast" and list(cast.input) == ["chip"]
    del copy.graph.node[0]
    for node in copy.graph.node:
        node.input[:] = ["chip" if name == cast.output[0] else name for name in node.input]
    copy.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    onnx.checker.check_model(copy)
    return copy


def random_chips(count: int) -> npt.NDArray[np.uint8]:
    chips = np.random.default_rng(7).integers(0, 256, (count, 150, 150, 3), dtype=np.uint8)
    chips[0], chips[1] = 0, 255  # the extremes of the range
    return chips


def one_face(faces: list[Face], photo: str) -> Face:
    matches = [face for face in faces if face.photo.endswith(photo)]
    assert len(matches) == 1, f"{photo}: {len(matches)} faces"
    return matches[0]


def test_reads_the_whole_network(resnet_dat: bytes) -> None:
    net = dlib_resnet.parse(resnet_dat)

    kinds = Counter(type(layer).__name__ for layer in net.layers)
    assert kinds == {
        "Conv": 29,
        "Affine": 29,
        "Relu": 29,
        "Marker": 22,
        "AddPrev": 14,
        "Pool": 6,
        "FullyConnected": 1,
    }
    assert net.input.means == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert (net.input.rows, net.input.cols) == (150, 150)
    assert net.distance_threshold == pytest.approx(0.6)
    assert net.facen_size == 128
    stem = net.layers[0]
    assert isinstance(stem, dlib_resnet.Conv)
    assert stem.filters.shape == (32, 3, 7, 7)
    assert (stem.stride, stem.padding) == ((2, 2), (0, 0))


def test_graph_contract(model: onnx.ModelProto) -> None:
    (chip,) = model.graph.input
    (facen,) = model.graph.output
    assert chip.name == "chip"
    assert chip.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in chip.type.tensor_type.shape.dim]
    assert dims == ["N", 150, 150, 3]
    assert facen.name == "facen"
    assert [d.dim_param or d.dim_value for d in facen.type.tensor_type.shape.dim] == ["N", 128]
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    props = {p.key: p.value for p in model.metadata_props}
    assert (props["name"], props["version"]) == ("dlib-resnet-v1", "1")
    # The uint8 chip is cast to float32 before anything else reads it.
    first = model.graph.node[0]
    assert (first.op_type, list(first.input)) == ("Cast", ["chip"])
    assert onnx.helper.get_attribute_value(first.attribute[0]) == onnx.TensorProto.FLOAT
    assert sum("chip" in node.input for node in model.graph.node) == 1
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["Cast"] == 1
    # Every affine is folded into its conv: no Mul and no BatchNormalization left.
    assert ops["Conv"] == 29
    assert "Mul" not in ops
    assert "BatchNormalization" not in ops


def test_name_and_version_go_into_the_metadata(resnet_dat: bytes) -> None:
    model = dlib_resnet.build_onnx(resnet_dat, name="facen-dlib", version="7")

    props = {p.key: p.value for p in model.metadata_props}
    assert (props["name"], props["version"]) == ("facen-dlib", "7")


def test_matches_dlib_face_by_face(session: ort.InferenceSession, faces: list[Face]) -> None:
    assert len(faces) >= 10
    differences = {
        f"{face.photo}#{i}": float(
            np.abs(facens(session, face.chip[None])[0] - face.reference).max()
        )
        for i, face in enumerate(faces)
    }

    assert max(differences.values()) <= PARITY_TOLERANCE, differences


def test_a_batch_gives_the_single_results(session: ort.InferenceSession, faces: list[Face]) -> None:
    chips = np.stack([face.chip for face in faces[:8]])

    batched = facens(session, chips)
    singles = np.concatenate([facens(session, chip[None]) for chip in chips])

    assert batched.shape == (len(chips), 128)
    np.testing.assert_allclose(batched, singles, rtol=0, atol=1e-6)


def test_uint8_chips_give_the_vectors_of_float32_chips_bit_for_bit(
    model: onnx.ModelProto, session: ort.InferenceSession, faces: list[Face]
) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    before = ort.InferenceSession(
        float_input(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    chips = np.concatenate([np.stack([face.chip for face in faces]), random_chips(8)])

    for batch in (chips[:1], chips[1:9], chips):
        (expected,) = before.run(["facen"], {"chip": batch.astype(np.float32)})
        np.testing.assert_array_equal(facens(session, batch), expected)


def test_distances_separate_people(session: ort.InferenceSession, faces: list[Face]) -> None:
    names = ("/obama.jpg", "obama-240p.jpg", "obama-1080p.jpg", "biden.jpg")
    obama, obama_240p, obama_1080p, biden = facens(
        session, np.stack([one_face(faces, name).chip for name in names])
    )

    def distance(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
        return float(np.linalg.norm(a - b))

    assert distance(obama, obama_240p) < SAME_PERSON_DISTANCE
    assert distance(obama, obama_1080p) < SAME_PERSON_DISTANCE
    assert distance(obama, biden) > SAME_PERSON_DISTANCE
    assert distance(obama_240p, biden) > SAME_PERSON_DISTANCE
    # The descriptor is dlib's raw fc output, not a unit vector.
    assert np.linalg.norm(obama) > 1.2


@pytest.mark.parametrize("keep", [0, 1, 30, 335, 19_330, 11_000_000, -1])
def test_a_truncated_file_is_a_format_error(resnet_dat: bytes, keep: int) -> None:
    with pytest.raises(DlibFormatError, match="byte"):
        dlib_resnet.parse(resnet_dat[:keep])


def test_garbled_and_padded_files_are_format_errors(resnet_dat: bytes) -> None:
    garbled = bytearray(resnet_dat)
    garbled[4:17] = b"loss_hinge___"  # a different loss layer name of the same length
    with pytest.raises(dlib_resnet.DlibResnetFormatError, match="loss_metric_2"):
        dlib_resnet.parse(bytes(garbled))

    with pytest.raises(dlib_resnet.DlibResnetFormatError, match="unexpected bytes"):
        dlib_resnet.parse(resnet_dat + b"\x00")

    with pytest.raises(dlib_resnet.DlibResnetFormatError):
        dlib_resnet.build_onnx(b"not a dlib file at all")


# --- The bundle and the engine: uint8 chips straight into the model. ---------------------------


def test_the_bundle_describes_the_chip_as_uint8(model_bundle: Path) -> None:
    manifest = json.loads((model_bundle / "manifest.json").read_text())
    (facen,) = [m for m in manifest["models"] if m["task"] == "facen"]

    assert facen["inputs"] == [{"name": "chip", "dtype": "uint8", "shape": ["N", 150, 150, 3]}]
    assert facen["outputs"] == [{"name": "facen", "dtype": "float32", "shape": ["N", 128]}]
    # The vectors are the same as before the chip became uint8: so is the model's name.
    assert (facen["name"], facen["version"], manifest["facen_model"]) == (
        "dlib-resnet-v1",
        "1",
        "dlib-resnet-v1",
    )


def test_the_engine_gives_the_float32_vectors_directly_and_batched(model_bundle: Path) -> None:
    chips = random_chips(12)
    model = onnx.load(str(model_bundle / "dlib-resnet-v1.onnx"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the engines below
    before = ort.InferenceSession(
        float_input(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    expected = [before.run(["facen"], {"chip": chip[None].astype(np.float32)})[0] for chip in chips]

    direct = Engine(model_bundle, threads=1)
    batched = Engine(model_bundle, threads=1, batch_wait=0.05, max_batch=8)
    try:
        for i, chip in enumerate(chips):
            np.testing.assert_array_equal(direct.facen(chip[None]), expected[i])
        # Concurrent callers' uint8 chips merged into one run; each gets its own vector back.
        with ThreadPoolExecutor(len(chips)) as pool:
            vectors = list(pool.map(lambda chip: batched.facen(chip[None]), chips))
        for got, wanted in zip(vectors, expected, strict=True):
            np.testing.assert_allclose(got, wanted, rtol=0, atol=1e-6)
        with pytest.raises(TypeError, match="uint8"):
            direct.facen(chips[:1].astype(np.float32))
    finally:
        batched.close()


def test_the_engine_still_runs_a_bundle_whose_model_takes_float32(
    model_bundle: Path, tmp_path: Path
) -> None:
    old = tmp_path / "bundle"
    shutil.copytree(model_bundle, old)
    file = old / "dlib-resnet-v1.onnx"
    onnx.save(float_input(onnx.load(str(file))), str(file))
    manifest = json.loads((old / "manifest.json").read_text())
    for entry in manifest["models"]:
        if entry["task"] == "facen":
            entry["sha256"] = sha256_of(file)
    (old / "manifest.json").write_text(json.dumps(manifest))
    chips = random_chips(3)

    np.testing.assert_array_equal(
        Engine(old, threads=1).facen(chips), Engine(model_bundle, threads=1).facen(chips)
    )
