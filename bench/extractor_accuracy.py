"""Recognition quality of the whole extractor pipeline on shared/data/faces.

- verification on deepface's pair lists (master.csv, face-recognition-pivot.csv): accuracy at
  dlib's threshold (distance < 0.6 means the same person) and at the best threshold;
- rank-1 identification: the first photo of each person is the gallery, the others are probes
  (AT&T: 40 people x 10; face-api.js: 8 people x 5).

Photos in which no face is found count as errors. These sets are small; the product's accuracy
is also measured on a larger benchmark kept apart.

    FACEGRID_MODEL_CACHE=... python bench/extractor_accuracy.py
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from facegrid.extractor.bundle import build
from facegrid.extractor.core.engine import Engine

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
THRESHOLD = 0.6


def vector(engine: Engine, path: Path, min_face: int) -> npt.NDArray[np.float32] | None:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    rgb = np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    faces = engine.detect(rgb, min_face)
    if not faces:
        return None
    face = max(faces, key=lambda f: f.detection.box[2] - f.detection.box[0])
    return engine.facen(engine.chip(rgb, face)[None])[0]


def verification(engine: Engine, listing: Path) -> None:
    folder = listing.parent
    cache: dict[str, npt.NDArray[np.float32] | None] = {}
    pairs = []
    with listing.open() as f:
        for row in csv.DictReader(f):
            # The two lists name files differently: bare names, or paths from the repo root.
            x, y = (Path(row[k]).name for k in ("file_x", "file_y"))
            for name in (x, y):
                if name not in cache:
                    cache[name] = vector(engine, folder / name, 40)
            decision = row.get("Decision", row.get("decision"))
            pairs.append((cache[x], cache[y], decision == "Yes"))
    distances = np.array(
        [np.inf if a is None or b is None else float(np.linalg.norm(a - b)) for a, b, _ in pairs]
    )
    same = np.array([s for _, _, s in pairs])
    missing = sum(v is None for v in cache.values())
    at_threshold = float(((distances < THRESHOLD) == same).mean())
    finite = np.sort(distances[np.isfinite(distances)])
    best = max(float(((distances < t) == same).mean()) for t in finite + 1e-6)
    print(
        f"{listing.name}: {len(pairs)} pairs ({same.sum()} same), {missing} photos without "
        f"a face; accuracy {at_threshold:.3f} at {THRESHOLD}, {best:.3f} at the best threshold"
    )


def identification(engine: Engine, name: str, people: dict[str, list[Path]], min_face: int) -> None:
    gallery, probes = {}, []
    for person, photos in people.items():
        photos = sorted(photos)
        first = vector(engine, photos[0], min_face)
        if first is not None:
            gallery[person] = first
        probes += [(person, p) for p in photos[1:]]
    names = list(gallery)
    matrix = np.stack([gallery[n] for n in names])
    correct = missed = 0
    for person, path in probes:
        probe = vector(engine, path, min_face)
        if probe is None:
            missed += 1
            continue
        best = names[int(np.argmin(np.linalg.norm(matrix - probe, axis=1)))]
        correct += best == person
    print(
        f"{name}: {len(people)} people, {len(probes)} probes, {missed} without a face; "
        f"rank-1 {correct / len(probes):.3f}"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(build(Path(tmp), progress=lambda _line: None).path)
    dataset = FACES / "deepface" / "tests" / "unit" / "dataset"
    for listing in ("master.csv", "face-recognition-pivot.csv"):
        if (dataset / listing).exists():
            verification(engine, dataset / listing)
    att = FACES / "att_faces" / "att_faces"
    identification(engine, "AT&T", {d.name: list(d.glob("*.pgm")) for d in att.glob("s*")}, 20)
    fapi = FACES / "face-api.js" / "examples" / "images"
    identification(
        engine,
        "face-api.js",
        {
            d.name: list(d.glob("*.png")) + list(d.glob("*.jpg"))
            for d in fapi.iterdir()
            if d.is_dir()
        },
        20,
    )


if __name__ == "__main__":
    main()
