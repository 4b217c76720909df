"""Where the seed's confidence presets fall on our model's distance scale.

The seed's API speaks of confidence in 0..1 with presets defined by false-accept rates on its
test set: strict 0.7834 (FAR 1e-5), medium 0.6616 (1e-3), low 0.5690 (1e-1). This script
extracts face vectors for every photo of the identity-labelled sets in shared/data/faces
(AT&T, Yale, face-api.js, deepface), forms every same-person and different-person pair, and
prints the Euclidean distance at which each false-accept rate is reached, with the true-accept
rate there. A distance-to-confidence mapping that passes through these points makes the presets
mean on our model what they meant on the seed's. With a few hundred thousand impostor pairs,
FAR 1e-5 rests on a handful of pairs: treat that point as indicative.

    FACEGRID_MODEL_CACHE=... python bench/confidence_mapping.py
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
PRESETS = (("strict", 0.7834, 1e-5), ("medium", 0.6616, 1e-3), ("low", 0.5690, 1e-1))


def identities() -> dict[str, list[Path]]:
    people: dict[str, list[Path]] = {}
    for folder in sorted((FACES / "att_faces" / "att_faces").glob("s*")):
        people[f"att/{folder.name}"] = sorted(folder.glob("*.pgm"))
    for path in sorted((FACES / "yalefaces" / "yalefaces").glob("subject*")):
        people.setdefault(f"yale/{path.name.split('.')[0]}", []).append(path)
    images = FACES / "face-api.js" / "examples" / "images"
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        people[f"faceapi/{folder.name}"] = sorted(folder.iterdir())
    listing = FACES / "deepface" / "DERIVED_identities.csv"
    with listing.open() as f:
        for row in csv.DictReader(f):
            path = FACES / "deepface" / row["file"]
            people.setdefault(f"deepface/{row['identity_cluster']}", []).append(path)
    return people


def read(path: Path) -> npt.NDArray[np.uint8] | None:
    capture = cv2.VideoCapture(str(path))  # also reads Yale's extension-less GIFs
    ok, frame = capture.read()
    capture.release()
    if not ok:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            return None
        frame = image
    return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(build(Path(tmp), progress=lambda _line: None).path)
    labels, vectors, missing = [], [], 0
    for person, paths in identities().items():
        for path in paths:
            rgb = read(path)
            faces = engine.detect(rgb, 20) if rgb is not None else []
            if rgb is None or not faces:
                missing += 1
                continue
            face = max(faces, key=lambda f: f.detection.box[2] - f.detection.box[0])
            vectors.append(engine.facen(engine.chip(rgb, face)[None])[0])
            labels.append(person)
    matrix = np.stack(vectors)
    names = np.array(labels)
    distances = np.linalg.norm(matrix[:, None, :] - matrix[None, :, :], axis=2)
    upper = np.triu_indices(len(names), k=1)
    d = distances[upper]
    same = names[upper[0]] == names[upper[1]]
    genuine, impostor = np.sort(d[same]), np.sort(d[~same])
    print(
        f"{len(names)} faces of {len(set(labels))} people ({missing} photos without a face): "
        f"{len(genuine)} same-person pairs, {len(impostor)} different-person pairs"
    )
    for name, confidence, far in PRESETS:
        k = max(int(far * len(impostor)), 1)
        threshold = float(impostor[k - 1])
        tar = float((genuine < threshold).mean())
        print(
            f"  {name:6s} confidence {confidence}: FAR {far:g} at distance {threshold:.4f} "
            f"({k} impostor pairs closer); TAR there {tar:.4f}"
        )
    print(
        f"  dlib's own threshold 0.6: FAR {float((impostor < 0.6).mean()):.5f}, "
        f"TAR {float((genuine < 0.6).mean()):.4f}"
    )


if __name__ == "__main__":
    main()
