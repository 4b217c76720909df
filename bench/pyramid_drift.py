"""How far the detector's resampling shortcuts move the face vectors, against moving the photo.

The detector makes each pyramid level from one copy of the photo at twice the first level's
scale (`_pyramid`), not from the full photo, and cuts each R-Net and O-Net crop from a halving
of the photo in which the box still spans at least twice the crop (`_Halvings`), not from the
full photo. For each face photo of shared/data/faces this finds the biggest face and its vector
three ways: with levels and crops made from the full photo (the reference), with the
shortcuts, and with the reference pipeline on the photo shifted left by one pixel (how much any
small change of input moves a vector). It prints the distributions of the vector distances and
of the box and landmark moves for both, side by side, and the time the detector took on all
the photos with and without the shortcuts.

    FACEGRID_MODEL_CACHE=... python bench/pyramid_drift.py
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from facegrid.extractor.bundle import build
from facegrid.extractor.core import detect
from facegrid.extractor.core.engine import Engine, Face

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
PATTERNS = [
    "deepface/**/*.jpg",
    "dlib/examples/johns/*/*.jpg",
    "face_recognition/examples/**/*.jpg",
    "dlib/examples/faces/*.jpg",
]
Image = npt.NDArray[np.uint8]


def from_full_photo(image: Image, scales: list[float]) -> Iterator[Image]:
    """Every level resized from the full photo (what the shortcut replaces)."""
    height, width = image.shape[:2]
    for scale in scales:
        size = (math.ceil(width * scale), math.ceil(height * scale))
        yield np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)


class FullPhoto(detect._Halvings):
    """Every crop cut from the full photo (what the halvings replace)."""

    def level(self, k: int) -> tuple[Image, int]:
        return super().level(0)


def biggest(engine: Engine, image: Image) -> tuple[Face, npt.NDArray[np.float32]] | None:
    faces = engine.detect(image, 50)
    if not faces:
        return None
    face = max(faces, key=lambda f: f.detection.box[2] - f.detection.box[0])
    return face, engine.facen(engine.chip(image, face)[None])[0]


def summary(label: str, moves: list[tuple[float, float, float]], lost: int) -> str:
    vectors, points, boxes = (np.array(column) for column in zip(*moves, strict=True))
    return (
        f"{label}: {len(moves)} faces ({lost} found by one side only); vector L2 median "
        f"{np.median(vectors):.4f}, p95 {np.percentile(vectors, 95):.4f}, max {vectors.max():.4f}; "
        f"landmarks median {np.median(points):.1f} px, p95 {np.percentile(points, 95):.1f}; "
        f"box median {np.median(boxes):.1f} px, p95 {np.percentile(boxes, 95):.1f}"
    )


def main() -> None:
    paths = [p for pattern in PATTERNS for p in sorted(FACES.glob(pattern))]
    shortcuts = detect._pyramid, detect._Halvings

    def use_shortcuts(used: bool) -> None:
        detect._pyramid, detect._Halvings = shortcuts if used else (from_full_photo, FullPhoto)

    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(build(Path(tmp), progress=lambda _line: None).path, threads=1)
        compared: dict[str, list[tuple[float, float, float]]] = {"shortcut": [], "shift": []}
        lost = {"shortcut": 0, "shift": 0}
        seconds = {True: 0.0, False: 0.0}
        for path in paths:
            bgr = cv2.imread(str(path))
            if bgr is None:
                continue
            rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            use_shortcuts(False)
            start = time.perf_counter()
            reference = biggest(engine, rgb)
            seconds[False] += time.perf_counter() - start
            shifted = biggest(engine, np.ascontiguousarray(rgb[:, 1:]))
            use_shortcuts(True)
            start = time.perf_counter()
            found = biggest(engine, rgb)
            seconds[True] += time.perf_counter() - start
            others = {"shortcut": found, "shift": shifted}
            # The shifted photo's x are one less for the same place.
            offsets = {"shortcut": 0.0, "shift": 1.0}
            for name, other in others.items():
                if (reference is None) != (other is None):
                    lost[name] += 1
                if reference is None or other is None:
                    continue
                (a, va), (b, vb) = reference, other
                dx = offsets[name]
                parts = b.parts + np.array([dx, 0.0], np.float32)
                box = np.add(b.detection.box, [dx, 0.0, dx, 0.0])
                compared[name].append(
                    (
                        float(np.linalg.norm(va - vb)),
                        float(np.abs(a.parts - parts).max()),
                        float(np.abs(np.subtract(a.detection.box, box)).max()),
                    )
                )
        print(f"{len(paths)} photos")
        shortcut_label = "levels from one copy at twice the first scale, crops from halvings"
        print(summary(shortcut_label, compared["shortcut"], lost["shortcut"]))
        print(summary("photo shifted by one pixel", compared["shift"], lost["shift"]))
        print(
            f"detect, landmarks and face vector of the biggest face, all photos: "
            f"{seconds[True]:.2f} s with the shortcuts, {seconds[False]:.2f} s without"
        )


if __name__ == "__main__":
    main()
