"""Face detection quality on the shared photos: recall on dlib's boxes, few false alarms."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from facegrid.extractor.core.detect import (
    HALVING_MARGIN,
    DetectorParams,
    FaceDetector,
    _crops,
    _Halvings,
    _pyramid,
    nms,
)
from facegrid.extractor.main import detector_params
from facegrid.extractor.settings import ExtractorSettings

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces"
PASCAL = FACES / "dlib" / "examples" / "faces"


@pytest.fixture(scope="module")
def detector(mtcnn_models: dict[str, bytes]) -> FaceDetector:
    return FaceDetector(
        mtcnn_models["pnet"],
        mtcnn_models["rnet"],
        mtcnn_models["onet"],
        DetectorParams(min_face_size=20),
    )


def _rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_recall_on_dlibs_pascal_boxes(detector: FaceDetector) -> None:
    found = total = 0
    for listing in ("training.xml", "testing.xml"):
        for image in ET.parse(PASCAL / listing).getroot().iter("image"):
            detections = detector.detect(_rgb(PASCAL / str(image.get("file"))))
            for box in image.iter("box"):
                left, top = int(box.get("left", 0)), int(box.get("top", 0))
                truth = (
                    left,
                    top,
                    left + int(box.get("width", 0)),
                    top + int(box.get("height", 0)),
                )
                total += 1
                found += any(_iou(truth, d.box) >= 0.5 for d in detections)
    assert total == 43
    assert found / total >= 0.95, f"recall {found}/{total}"


def test_pyramid_levels_match_resizing_the_whole_photo(detector: FaceDetector) -> None:
    """Levels made from one copy at twice the first scale: the sizes the scales ask for, and
    nearly the same pixels as levels made from the full photo, at every depth."""
    photo = _rgb(FACES / "face_recognition" / "examples" / "obama-1080p.jpg")
    height, width = photo.shape[:2]
    scales = detector.scales(height, width)
    assert len(scales) >= 8
    levels = list(_pyramid(photo, scales))
    for scale, level in zip(scales, levels, strict=True):
        size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
        assert (level.shape[1], level.shape[0]) == size
        direct = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
        assert np.abs(level.astype(np.int16) - direct).mean() < 0.5, scale


def _crop_from_full_photo(
    photo: np.ndarray, box: tuple[int, int, int, int], size: int
) -> np.ndarray:
    """The box's pixels (inclusive corners, zero outside the photo) resized to size x size."""
    x1, y1, x2, y2 = box
    padded = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3), np.uint8)
    height, width = photo.shape[:2]
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2 + 1, width), min(y2 + 1, height)
    padded[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = photo[sy1:sy2, sx1:sx2]
    return cv2.resize(padded, (size, size), interpolation=cv2.INTER_AREA)


def test_crops_from_halvings_match_crops_from_the_full_photo() -> None:
    """R-Net's and O-Net's crops: a box under four times the crop's side is cut from the photo
    itself, bit for bit; a bigger one from a halving, within 1.5 grey levels on average (the
    face's box, the most textured, is 1.1 off)."""
    photo = _rgb(FACES / "face_recognition" / "examples" / "obama-1080p.jpg")
    height, width = photo.shape[:2]
    boxes = [
        (900, 200, 1340, 640),  # the face, 441 px
        (100, 100, 130, 130),  # 31 px
        (-60, -40, 139, 159),  # 200 px, partly outside
        (300, 300, 399, 399),  # 100 px
        (width - 300, height - 500, width + 299, height + 99),  # 600 px, partly outside
        (0, 0, width - 1, height - 1),  # the whole photo, not square
    ]
    for size in (24, 48):
        got = _crops(_Halvings(photo), np.array(boxes, np.float32), size)
        for box, crop in zip(boxes, got, strict=True):
            pixels = crop * 128 + 127.5  # back from the networks' scale
            expected = _crop_from_full_photo(photo, box, size).astype(np.float32)
            side = min(box[2] - box[0], box[3] - box[1]) + 1
            if side < HALVING_MARGIN * size:
                np.testing.assert_array_equal(pixels, expected)
            else:
                assert np.abs(pixels - expected).mean() < 1.5, (box, size)
    levels = [_Halvings(photo).level(k) for k in range(12)]
    assert [factor for _, factor in levels][:4] == [1, 2, 4, 8]
    assert levels[1][0].shape == (height // 2, width // 2, 3)
    assert min(levels[-1][0].shape[:2]) >= 2  # no deeper than 2 x 2


def test_no_faces_in_photos_without_people(detector: FaceDetector) -> None:
    photos = sorted((FACES / "no-faces" / "skimage").glob("*.[pj][np]g"))
    assert len(photos) >= 12
    flagged = [p.name for p in photos if detector.detect(_rgb(p))]
    assert flagged == []
    assert detector.detect(_rgb(PASCAL / "dogs.jpg")) == []


def test_faces_come_with_landmarks_inside_their_box(detector: FaceDetector) -> None:
    detections = detector.detect(_rgb(FACES / "facenet-pytorch" / "data" / "multiface.jpg"))
    assert len(detections) >= 5
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
    for d in detections:
        left, top, right, bottom = d.box
        assert d.landmarks.shape == (5, 2)
        assert (d.landmarks[:, 0] > left).all() and (d.landmarks[:, 0] < right).all()
        assert (d.landmarks[:, 1] > top).all() and (d.landmarks[:, 1] < bottom).all()
        assert d.landmarks[0, 0] < d.landmarks[1, 0]  # left eye left of right eye
        assert d.landmarks[2, 1] < d.landmarks[3, 1]  # nose above the mouth


def test_minimum_face_size_drops_small_faces(detector: FaceDetector) -> None:
    image = _rgb(PASCAL / "2008_002079.jpg")  # six faces of 37-53 px
    small = detector.detect(image, min_face_size=20)
    assert len(small) >= 5
    # The pyramid starts at windows of ~120 px, so at most a stray loose box survives.
    assert len(detector.detect(image, min_face_size=120)) <= 1


def test_degenerate_images(detector: FaceDetector) -> None:
    assert detector.detect(np.zeros((5, 5, 3), np.uint8)) == []
    assert detector.detect(np.full((300, 300, 3), 255, np.uint8)) == []


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.8, 0.9, 0.7], np.float32)
    assert nms(boxes, scores, 0.5) == [1, 2]
    nested = np.array([[0, 0, 100, 100], [40, 40, 50, 50]], np.float32)
    assert nms(nested, np.array([0.9, 0.8], np.float32), 0.7, by_min=True) == [0]
    assert nms(nested, np.array([0.9, 0.8], np.float32), 0.7) == [0, 1]


def test_the_detector_settings_reach_the_detector(mtcnn_models: dict[str, bytes]) -> None:
    """The seed's --nnd-*-net-thresh and --nnd-scale-factor, as FACEGRID_EXTRACTOR_DETECT_*."""
    assert detector_params(ExtractorSettings()) == DetectorParams()
    strict = ExtractorSettings(detect_thresholds="0.6,0.7,0.9999", detect_scale_factor=0.8)
    params = detector_params(strict)
    assert (params.thresholds, params.scale_factor) == ((0.6, 0.7, 0.9999), 0.8)
    photo = _rgb(FACES / "facenet-pytorch" / "data" / "multiface.jpg")

    def found(p: DetectorParams) -> int:
        nets = (mtcnn_models["pnet"], mtcnn_models["rnet"], mtcnn_models["onet"])
        return len(FaceDetector(*nets, p).detect(photo))

    assert 0 < found(params) < found(DetectorParams())
    for bad in ("0.6,0.7", "0.6,0.7,1", "a,b,c"):
        with pytest.raises(ValidationError, match="detect_thresholds"):
            ExtractorSettings(detect_thresholds=bad)
    with pytest.raises(ValidationError, match="detect_scale_factor"):
        ExtractorSettings(detect_scale_factor=0.99)
