"""The inference engine: a built model bundle, loaded, checked and warmed up, on onnxruntime.

The pipeline per face follows dlib's, which is what the face vector model was trained with:
MTCNN finds the face and five points; a box is placed where dlib's HOG detector would have put
it (fitted by bench/fit_landmark_box.py); dlib's 5-point shape predictor runs in that box; the
face chip is cut exactly as dlib cuts it; the ResNet turns the chip into a 128-D vector. Gender
and age use their own chips (padding 0.2, as their models were trained), emotions a greyscale
64x64 face chip.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from facegrid.extractor.convert.dlib_shape_predictor import ShapePredictorArrays
from facegrid.extractor.core.align import face_chip
from facegrid.extractor.core.batching import MicroBatcher
from facegrid.extractor.core.detect import Detection, DetectorParams, FaceDetector
from facegrid.extractor.core.landmarks import ShapePredictor
from facegrid.extractor.core.models import BadBundle, Provider
from facegrid.files import sha256_of

FloatArray = npt.NDArray[np.float32]
Image = npt.NDArray[np.uint8]

# Box placement from MTCNN's points, fitted on shared/data/faces (bench/fit_landmark_box.py):
# centre = eyes + P * (mouth - eyes) + Q * perp(right_eye - left_eye);
# side = R * |mouth - eyes| + T * |right_eye - left_eye|.
BOX_P, BOX_Q, BOX_R, BOX_T = 0.0462, 0.4687, -0.0729, 2.3680


def dlib_box(points: FloatArray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) where dlib's HOG detector would frame the face."""
    eyes = (points[0] + points[1]) / 2
    down = (points[3] + points[4]) / 2 - eyes
    across = points[1] - points[0]
    perp = np.array([-across[1], across[0]])
    centre = eyes + BOX_P * down + BOX_Q * perp
    side = BOX_R * float(np.linalg.norm(down)) + BOX_T * float(np.linalg.norm(across))
    half = side / 2
    return (
        round(centre[0] - half),
        round(centre[1] - half),
        round(centre[0] + half),
        round(centre[1] + half),
    )


@dataclass(frozen=True)
class Face:
    detection: Detection
    box: tuple[int, int, int, int]  # dlib-style box the landmarks were found in
    parts: FloatArray  # dlib's 5 points: right eye outer/inner, left eye outer/inner, nose


@dataclass(frozen=True)
class Attributes:
    gender: str | None = None
    gender_confidence: float = 0.0
    age: float | None = None
    emotions: list[tuple[str, float]] | None = None


class Engine:
    def __init__(
        self,
        bundle_dir: Path,
        providers: Sequence[Provider] | None = None,
        threads: int = 0,
        detector_params: DetectorParams | None = None,
        *,
        batch_wait: float | None = None,
        max_batch: int = 64,
        observe: Callable[[str, float], None] | None = None,
        spin: bool = False,
    ) -> None:
        """Load and check a bundle.

        batch_wait: when set, concurrent callers' face vector runs are merged into batches of
        up to max_batch chips, waiting at most this many seconds for company.
        observe(stage, seconds) is called after each stage (for latency histograms).
        spin: let onnxruntime's threads spin while they wait for work.
        """
        self._observe = observe or (lambda _stage, _seconds: None)
        manifest_path = bundle_dir / "manifest.json"
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise BadBundle(f"cannot read {manifest_path}: {e}") from e
        self.providers = list(providers or ["CPUExecutionProvider"])
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # onnxruntime's pool threads spin between runs unless told not to: a little less latency
        # on cores of their own, CPU taken from every other process on shared ones.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.models = {m["task"]: m for m in self.manifest["models"]}
        for entry in self.manifest["models"]:
            path = bundle_dir / entry["file"]
            if not path.exists() or sha256_of(path) != entry["sha256"]:
                raise BadBundle(f"{path} is missing or does not match its sha256 in the manifest")

        def session(task: str) -> ort.InferenceSession:
            return ort.InferenceSession(raw(task), options, providers=self.providers)

        def raw(task: str) -> bytes:
            return (bundle_dir / str(self.models[task]["file"])).read_bytes()

        self.detector = FaceDetector(
            raw("detector.pnet"),
            raw("detector.rnet"),
            raw("detector.onet"),
            detector_params,
            self.providers,
            options,
        )
        self.shape_predictor = ShapePredictor(
            ShapePredictorArrays.from_npz(bundle_dir / self.models["landmarks"]["file"])
        )
        self._facen = session("facen")
        # Chips go in as uint8 (a quarter of float32's bytes to copy to a GPU); a bundle built
        # before the model took uint8 takes float32, the same values.
        self._facen_float = self._facen.get_inputs()[0].type == "tensor(float)"
        self._facen_batcher = (
            MicroBatcher(self._run_facen, max_batch, batch_wait, name="facen-batcher")
            if batch_wait is not None
            else None
        )
        self._gender = session("gender")
        self._age = session("age")
        self._emotions = session("emotions")
        self.facen_model = str(self.manifest["facen_model"])
        self.version = str(self.manifest["version"])
        self.facen_size = int(self.manifest["facen_size"])

    def warm_up(self) -> None:
        """Run every model once so the first real request pays no initialisation cost."""
        image = np.zeros((160, 160, 3), np.uint8)
        self.detector.detect(image)
        self.facen(np.zeros((1, 150, 150, 3), np.uint8))
        self._gender.run(None, {"images": np.zeros((1, 3, 32, 32), np.float32)})
        self._age.run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})
        self._emotions.run(None, {"face": np.zeros((1, 64, 64, 1), np.float32)})

    # -- stages ---------------------------------------------------------------------------------

    def close(self) -> None:
        if self._facen_batcher is not None:
            self._facen_batcher.close()

    def detect(self, image: Image, min_face_size: int | None = None) -> list[Face]:
        start = time.perf_counter()
        detections = self.detector.detect(image, min_face_size)
        self._observe("detect", time.perf_counter() - start)
        start = time.perf_counter()
        boxes = [dlib_box(detection.landmarks) for detection in detections]
        found = self.shape_predictor.predict_many(image, boxes)
        faces = [
            Face(detection, box, parts)
            for detection, box, parts in zip(detections, boxes, found, strict=True)
        ]
        if faces:
            self._observe("landmarks", time.perf_counter() - start)
        return faces

    def chip(self, image: Image, face: Face, size: int = 150, padding: float = 0.25) -> Image:
        start = time.perf_counter()
        chip = face_chip(image, face.parts, size=size, padding=padding)
        self._observe("align", time.perf_counter() - start)
        return chip

    def facen(self, chips: Image) -> FloatArray:
        """(N, 150, 150, 3) uint8 chips -> (N, 128) face vectors."""
        if chips.dtype != np.uint8:
            raise TypeError(f"face chips must be uint8, not {chips.dtype}")
        start = time.perf_counter()
        rows = chips.astype(np.float32) if self._facen_float else chips
        if self._facen_batcher is not None:
            vectors = self._facen_batcher(rows)
        else:
            vectors = self._run_facen(rows)
        self._observe("facen", time.perf_counter() - start)
        return np.asarray(vectors, dtype=np.float32)

    def _run_facen(self, rows: npt.NDArray[np.generic]) -> FloatArray:
        (vectors,) = self._facen.run(None, {"chip": rows})
        return np.asarray(vectors, dtype=np.float32)

    def attributes(
        self,
        images: list[Image],
        parts: list[FloatArray],
        *,
        gender: bool = True,
        age: bool = True,
        emotions: bool = True,
    ) -> list[Attributes]:
        """Gender, age and emotions for faces given by their image and dlib points."""
        if not parts:
            return []
        start = time.perf_counter()
        try:
            return self._attributes(images, parts, gender, age, emotions)
        finally:
            self._observe("attributes", time.perf_counter() - start)

    def _attributes(
        self,
        images: list[Image],
        parts: list[FloatArray],
        gender: bool,
        age: bool,
        emotions: bool,
    ) -> list[Attributes]:
        out: list[dict[str, Any]] = [{} for _ in parts]
        if gender:
            spec = self.models["gender"]
            chips = self._normalised_chips(images, parts, spec)
            (probabilities,) = self._gender.run(None, {"images": chips})
            labels = spec["labels"]
            for i, p in enumerate(probabilities):
                best = int(np.argmax(p))
                out[i]["gender"] = str(labels[best])
                out[i]["gender_confidence"] = float(p[best])
        if age:
            spec = self.models["age"]
            chips = self._normalised_chips(images, parts, spec)
            (probabilities,) = self._age.run(None, {"images": chips})
            weights = np.asarray(spec["age_weights"], np.float32)
            for i, p in enumerate(probabilities):
                out[i]["age"] = float(p @ weights)
        if emotions:
            labels = self.models["emotions"]["labels"]
            crops = np.stack(
                [self._grey_face(img, pts) for img, pts in zip(images, parts, strict=True)]
            )
            (probabilities,) = self._emotions.run(None, {"face": crops})
            for i, p in enumerate(probabilities):
                order = np.argsort(p)[::-1]
                out[i]["emotions"] = [(str(labels[k]), float(p[k])) for k in order]
        return [Attributes(**o) for o in out]

    def _normalised_chips(
        self, images: list[Image], parts: list[FloatArray], spec: dict[str, Any]
    ) -> FloatArray:
        size, padding = spec["chip"]["size"], spec["chip"]["padding"]
        means = np.asarray(spec["means"], np.float32)
        chips = np.stack(
            [
                face_chip(img, pts, size=size, padding=padding)
                for img, pts in zip(images, parts, strict=True)
            ]
        ).astype(np.float32)
        normalised = (chips - means) * np.float32(spec["scale"])
        return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2))

    @staticmethod
    def _grey_face(image: Image, parts: FloatArray) -> FloatArray:
        chip = face_chip(image, parts, size=64, padding=0.25)
        grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
        return grey.astype(np.float32)[:, :, None]
