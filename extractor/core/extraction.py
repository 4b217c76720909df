"""Detect and extract for batches of photos: the operations the extractor serves.

Each photo (or face) of a batch succeeds or fails on its own: a bad photo yields an error entry
with a FindFace code and never fails its neighbours or the process. Faces of a whole batch go
through the face vector and attribute models together, so a large batch is a large model run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from facegrid.extractor.core.align import chip_template_points
from facegrid.extractor.core.detect import Detection
from facegrid.extractor.core.engine import Attributes, Engine, Face, dlib_box
from facegrid.extractor.core.models import ExtractorError
from facegrid.extractor.core.quality import assess
from facegrid.images import DecodedImage, ImageError, decode

Box = tuple[int, int, int, int]
FloatArray = npt.NDArray[np.float32]
CHIP_SIZE = 150
CHIP_PADDING = 0.25


class BatchError(ExtractorError):
    """The batch as a whole is unacceptable (empty, too large); nothing was processed."""


@dataclass(frozen=True)
class ItemError:
    code: str
    reason: str


@dataclass(frozen=True)
class DetectedFace:
    box: Box
    score: float
    landmarks: FloatArray
    quality: float


@dataclass(frozen=True)
class PhotoDetections:
    faces: list[DetectedFace] = field(default_factory=list)
    width: int = 0
    height: int = 0
    orientation: int = 1
    error: ItemError | None = None


@dataclass(frozen=True)
class ExtractItem:
    image: bytes
    box: Box | None = None
    landmarks: FloatArray | None = None
    prenormalized: bool = False


@dataclass(frozen=True)
class Extracted:
    facen: FloatArray | None = None
    box: Box | None = None
    attributes: Attributes | None = None
    quality: float = 0.0
    normalized: bytes = b""
    error: ItemError | None = None


@dataclass(frozen=True)
class Wanted:
    facen: bool = True
    gender: bool = False
    age: bool = False
    emotions: bool = False
    normalized: bool = False


@dataclass(frozen=True)
class AnalysisRequest:
    image: bytes
    roi: Box | None = None
    prenormalized: bool = False
    auto_rotate: bool = False


@dataclass(frozen=True)
class AnalysedFace:
    box: Box
    score: float
    quality: float
    facen: FloatArray | None = None
    attributes: Attributes | None = None
    normalized: bytes = b""


@dataclass(frozen=True)
class Analysis:
    faces: list[AnalysedFace] = field(default_factory=list)
    error: ItemError | None = None


def _unrotate_points(points: FloatArray, k: int, width: int, height: int) -> FloatArray:
    """Points found in np.rot90(image, k) (image is width x height), in the image's coordinates."""
    x, y = points[:, 0], points[:, 1]
    if k == 1:
        x, y = width - 1 - y, x
    elif k == 2:
        x, y = width - 1 - x, height - 1 - y
    elif k == 3:
        x, y = y, height - 1 - x
    return np.stack([x, y], axis=1).astype(np.float32)


def _unrotate(box: tuple[float, float, float, float], k: int, width: int, height: int) -> Box:
    """A box found in np.rot90(image, k), in the coordinates of the image itself."""
    corners = np.array([[box[0], box[1]], [box[2], box[3]]], np.float32)
    points = _unrotate_points(corners, k, width, height)
    xs, ys = points[:, 0], points[:, 1]
    return (
        round(float(xs.min())),
        round(float(ys.min())),
        round(float(xs.max())),
        round(float(ys.max())),
    )


@dataclass(frozen=True)
class _Found:
    box: Box  # in the whole photo's coordinates
    score: float
    quality: float
    landmarks: FloatArray  # in the whole photo's coordinates
    source: npt.NDArray[np.uint8]  # the (cropped, turned) image the face was found in
    face: Face
    chip: npt.NDArray[np.uint8]


def _check_batch(size: int, max_batch: int) -> None:
    if size == 0:
        raise BatchError("the batch is empty")
    if size > max_batch:
        raise BatchError(f"the batch has {size} items; the limit is {max_batch}")


def _decode(data: bytes) -> DecodedImage | ItemError:
    try:
        return decode(data)
    except ImageError as e:
        return ItemError(e.code, e.reason)


def _area(box: tuple[float, float, float, float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


class Extraction:
    def __init__(
        self, engine: Engine, max_batch: int = 64, min_face_size: int = 50, max_face_size: int = 0
    ) -> None:
        """min_face_size, max_face_size: the defaults of detect's (max 0: no limit), and what
        analyse applies."""
        self.engine = engine
        self.max_batch = max_batch
        self.min_face_size = min_face_size
        self.max_face_size = max_face_size

    # -- detect ---------------------------------------------------------------------------------

    def detect(
        self,
        images: list[bytes],
        min_face_size: int = 0,
        max_face_size: int = 0,
        roi: Box | None = None,
        auto_rotate: bool = False,
    ) -> list[PhotoDetections]:
        _check_batch(len(images), self.max_batch)
        return [
            self._detect_one(data, min_face_size, max_face_size, roi, auto_rotate)
            for data in images
        ]

    def _detect_one(
        self,
        data: bytes,
        min_face_size: int,
        max_face_size: int,
        roi: Box | None,
        auto_rotate: bool = False,
    ) -> PhotoDetections:
        decoded = _decode(data)
        if isinstance(decoded, ItemError):
            return PhotoDetections(error=decoded)
        faces = []
        for found in self._find(decoded.rgb, roi, min_face_size, auto_rotate):
            if self._too_large(found.box, max_face_size):
                continue
            faces.append(DetectedFace(found.box, found.score, found.landmarks, found.quality))
        return PhotoDetections(faces, decoded.width, decoded.height, decoded.orientation)

    def _too_large(self, box: Box, max_face_size: int) -> bool:
        """Whether the face's longer side is above max_face_size (0: the default limit)."""
        limit = max_face_size or self.max_face_size
        left, top, right, bottom = box
        return bool(limit) and max(right - left, bottom - top) > limit

    def _find(
        self,
        photo: npt.NDArray[np.uint8],
        roi: Box | None,
        min_face_size: int,
        auto_rotate: bool,
    ) -> list[_Found]:
        """Faces in the photo (within roi); with auto_rotate also in the photo turned by 90, 180
        and 270 degrees, a face seen in several orientations kept once, where its quality is
        best. Boxes and landmarks are in the photo's own coordinates."""
        image, (dx, dy) = self._crop(photo, roi)
        height, width = image.shape[:2]
        offset = np.array([dx, dy], np.float32)
        kept: list[_Found] = []
        for k in (0, 1, 2, 3) if auto_rotate else (0,):
            turned = np.ascontiguousarray(np.rot90(image, k)) if k else image
            for face in self.engine.detect(turned, min_face_size or self.min_face_size):
                chip = self.engine.chip(turned, face)
                quality = assess(face.detection.score, face.detection.landmarks, chip).score
                box = _unrotate(face.detection.box, k, width, height)
                box = (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)
                landmarks = _unrotate_points(face.detection.landmarks, k, width, height) + offset
                same = [n for n, other in enumerate(kept) if _box_iou(other.box, box) > 0.5]
                if same and kept[same[0]].quality >= quality:
                    continue
                for n in reversed(same):
                    kept.pop(n)
                kept.append(
                    _Found(box, face.detection.score, quality, landmarks, turned, face, chip)
                )
        return kept

    @staticmethod
    def _crop(
        image: npt.NDArray[np.uint8], roi: Box | None
    ) -> tuple[npt.NDArray[np.uint8], tuple[int, int]]:
        if roi is None:
            return image, (0, 0)
        height, width = image.shape[:2]
        left, top = max(0, roi[0]), max(0, roi[1])
        right, bottom = min(width, roi[2]), min(height, roi[3])
        if right <= left or bottom <= top:
            return image[:0, :0], (left, top)
        return np.ascontiguousarray(image[top:bottom, left:right]), (left, top)

    # -- analyse: every face of every photo, with everything asked for -------------------------

    def analyse(self, requests: list[AnalysisRequest], wanted: Wanted) -> list[Analysis]:
        """The seed's Extraction API operation: all faces of each photo, each fully described.

        With auto_rotate the photo is also searched turned by 90, 180 and 270 degrees; a face
        found in several orientations is reported once, from the orientation where its quality
        is best, with its box in the photo's own coordinates.
        """
        _check_batch(len(requests), self.max_batch)
        results: list[Analysis | None] = [None] * len(requests)
        # One entry per face: (request index, box, score, quality, source image, face or None, chip)
        found: list[
            tuple[int, Box, float, float, npt.NDArray[np.uint8], Face | None, npt.NDArray[np.uint8]]
        ] = []
        for i, request in enumerate(requests):
            decoded = _decode(request.image)
            if isinstance(decoded, ItemError):
                results[i] = Analysis(error=decoded)
                continue
            if request.prenormalized:
                chip = np.asarray(
                    cv2.resize(decoded.rgb, (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_AREA),
                    dtype=np.uint8,
                )
                found.append((i, (0, 0, decoded.width, decoded.height), 1.0, 0.0, chip, None, chip))
                continue
            kept = [
                f
                for f in self._find(decoded.rgb, request.roi, 0, request.auto_rotate)
                if not self._too_large(f.box, 0)
            ]
            for f in kept:
                found.append((i, f.box, f.score, f.quality, f.source, f.face, f.chip))
            if not kept:
                results[i] = Analysis()

        if found:
            chips = np.stack([entry[6] for entry in found])
            vectors = self.engine.facen(chips) if wanted.facen else None
            attributes = self._attributes(
                [entry[4] for entry in found],
                [entry[5] for entry in found],
                [entry[6] for entry in found],
                wanted,
            )
            faces: dict[int, list[AnalysedFace]] = {}
            for n, (i, box, score, quality, _source, _face, chip) in enumerate(found):
                normalized = b""
                if wanted.normalized:
                    ok, png = cv2.imencode(".png", cv2.cvtColor(chip, cv2.COLOR_RGB2BGR))
                    normalized = png.tobytes() if ok else b""
                faces.setdefault(i, []).append(
                    AnalysedFace(
                        box,
                        score,
                        quality,
                        facen=vectors[n] if vectors is not None else None,
                        attributes=attributes[n] if attributes else None,
                        normalized=normalized,
                    )
                )
            for i, entries in faces.items():
                results[i] = Analysis(entries)
        return [r if r is not None else Analysis() for r in results]

    # -- extract --------------------------------------------------------------------------------

    def extract(self, items: list[ExtractItem], wanted: Wanted) -> list[Extracted]:
        _check_batch(len(items), self.max_batch)
        results: list[Extracted | None] = [None] * len(items)
        images: list[npt.NDArray[np.uint8]] = []
        faces: list[Face | None] = []  # None for prenormalized chips
        chips: list[npt.NDArray[np.uint8]] = []
        owners: list[int] = []
        boxes: list[Box] = []
        # Several faces of one photo come as items with the same bytes: the photo is decoded
        # once, and the landmarks of the faces whose five points came with them are found
        # together.
        photos: dict[bytes, DecodedImage | ItemError] = {}
        for item in items:
            if item.image not in photos:
                photos[item.image] = _decode(item.image)
        given = self._given_faces(items, photos)
        for i, item in enumerate(items):
            decoded = photos[item.image]
            if isinstance(decoded, ItemError):
                results[i] = Extracted(error=decoded)
                continue
            image = decoded.rgb
            if item.prenormalized:
                chip = np.asarray(
                    cv2.resize(image, (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_AREA),
                    dtype=np.uint8,
                )
                face: Face | None = None
                box: Box = (0, 0, image.shape[1], image.shape[0])
            else:
                found = given[i] if i in given else self._locate(image, item)
                if found is None:
                    results[i] = Extracted(error=ItemError("NO_FACE", "no face found"))
                    continue
                face = found
                chip = self.engine.chip(image, face)
                left, top, right, bottom = face.detection.box
                box = (round(left), round(top), round(right), round(bottom))
            images.append(image)
            faces.append(face)
            chips.append(chip)
            owners.append(i)
            boxes.append(box)

        if owners:
            batch = np.stack(chips)
            vectors = self.engine.facen(batch) if wanted.facen else None
            attributes = self._attributes(images, faces, chips, wanted)
            for k, i in enumerate(owners):
                face = faces[k]
                quality = (
                    assess(face.detection.score, face.detection.landmarks, chips[k]).score
                    if face is not None
                    else 0.0
                )
                normalized = b""
                if wanted.normalized:
                    ok, png = cv2.imencode(".png", cv2.cvtColor(chips[k], cv2.COLOR_RGB2BGR))
                    normalized = png.tobytes() if ok else b""
                results[i] = Extracted(
                    facen=vectors[k] if vectors is not None else None,
                    box=boxes[k],
                    attributes=attributes[k] if attributes else None,
                    quality=quality,
                    normalized=normalized,
                )
        return [
            r if r is not None else Extracted(error=ItemError("INTERNAL", "lost")) for r in results
        ]

    def _given_faces(
        self, items: list[ExtractItem], photos: dict[bytes, DecodedImage | ItemError]
    ) -> dict[int, Face]:
        """The faces of the items that came with their five points, by item index: dlib's
        landmarks found in the box the points give, all of one photo's faces together."""
        by_photo: dict[bytes, list[int]] = {}
        for i, item in enumerate(items):
            given = item.landmarks is not None and item.landmarks.shape == (5, 2)
            if given and not item.prenormalized and isinstance(photos[item.image], DecodedImage):
                by_photo.setdefault(item.image, []).append(i)
        faces: dict[int, Face] = {}
        for data, members in by_photo.items():
            decoded = photos[data]
            assert isinstance(decoded, DecodedImage)
            points = [np.asarray(items[i].landmarks, np.float32) for i in members]
            boxes = [dlib_box(p) for p in points]
            found = self.engine.shape_predictor.predict_many(decoded.rgb, boxes)
            for i, face_points, box, parts in zip(members, points, boxes, found, strict=True):
                left, top, right, bottom = items[i].box or box
                detection = Detection((left, top, right, bottom), 1.0, face_points)
                faces[i] = Face(detection, box, parts)
        return faces

    def _locate(self, image: npt.NDArray[np.uint8], item: ExtractItem) -> Face | None:
        """The biggest face found in the photo (overlapping item.box, when given)."""
        candidates = self.engine.detect(image, self.min_face_size)
        if item.box is not None:
            candidates = [c for c in candidates if _overlap(c.detection.box, item.box) > 0.3]
        if not candidates:
            return None
        return max(candidates, key=lambda c: _area(c.detection.box))

    def _attributes(
        self,
        images: list[npt.NDArray[np.uint8]],
        faces: list[Face | None],
        chips: list[npt.NDArray[np.uint8]],
        wanted: Wanted,
    ) -> list[Attributes] | None:
        if not (wanted.gender or wanted.age or wanted.emotions):
            return None
        # A prenormalized chip stands in for its own photo, with dlib's points of a chip.
        sources = []
        parts = []
        for image, face, chip in zip(images, faces, chips, strict=True):
            if face is None:
                sources.append(chip)
                parts.append(self._chip_parts())
            else:
                sources.append(image)
                parts.append(face.parts)
        return self.engine.attributes(
            sources, parts, gender=wanted.gender, age=wanted.age, emotions=wanted.emotions
        )

    def _chip_parts(self) -> FloatArray:
        """Where dlib's five points lie on a 150x150, padding-0.25 chip (the alignment template)."""
        return chip_template_points(CHIP_SIZE, CHIP_PADDING)


def _box_iou(a: Box, b: Box) -> float:
    return _overlap((float(a[0]), float(a[1]), float(a[2]), float(a[3])), b)


def _overlap(a: tuple[float, float, float, float], b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = _area(a) + _area((float(b[0]), float(b[1]), float(b[2]), float(b[3]))) - inter
    return inter / union if union > 0 else 0.0
