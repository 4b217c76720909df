"""Our dlib ResNet reader and ONNX graph give dlib's own face descriptors, on real faces.

dlib-bin is the reference: its HOG detector and 5-point predictor find the faces, its
`get_face_chip` cuts the chip our graph takes, and `compute_face_descriptor` gives the vector it
must reproduce.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest

from facegrid.extractor.convert import dlib_resnet
from facegrid.extractor.convert.dlib_format import DlibFormatError

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
    (out,) = session.run(["facen"], {"chip": chips.astype(np.float32)})
    return np.asarray(out)


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
    assert chip.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in chip.type.tensor_type.shape.dim]
    assert dims == ["N", 150, 150, 3]
    assert facen.name == "facen"
    assert [d.dim_param or d.dim_value for d in facen.type.tensor_type.shape.dim] == ["N", 128]
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    props = {p.key: p.value for p in model.metadata_props}
    assert (props["name"], props["version"]) == ("dlib-resnet-v1", "1")
    ops = Counter(node.op_type for node in model.graph.node)
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
