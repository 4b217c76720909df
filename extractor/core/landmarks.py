"""Face landmarks: dlib's shape predictor (ensemble of regression trees) in NumPy, exact to dlib.

The 5-point model places the points that align the face chip, and the chip decides the face
vector, so this replicates `dlib.shape_predictor(img, rect)` bit for bit rather than
approximately. It follows dlib's `shape_predictor.h`; the details that decide exactness:

- The shape lives in a box-normalised frame: dlib's `unnormalizing_tform` maps (0, 0), (1, 0),
  (1, 1) to the box's top-left, top-right and bottom-right corners, so x = left + (right -
  left) * u, up to rounding noise (below); the width is `right - left`, not `right - left + 1`.
- Each cascade level fits a similarity transform from the initial shape to the current one
  (Umeyama, in double) and narrows its 2x2 matrix to float32; a feature pixel is
  `tform * delta + current[anchor]` in float32, then mapped to the image in double and rounded
  with `floor(v + 0.5)` (dlib's float-to-integer point conversion).
- A pixel outside the image reads 0; an RGB pixel reads `(r + g + b) // 3` (integer division),
  a greyscale one its value.
- A tree goes to its left child (2i + 1) when `f[idx1] - f[idx2] > thresh`, else to 2i + 2.
- The leaf updates of a level are added to the shape one tree after another in float32: float
  addition is not associative, so they are not summed first.
- The returned points are rounded like the feature pixels: dlib's `full_object_detection` holds
  integer points, so dlib's landmarks are whole pixels and so are these.

The box transform is dlib's to the last bit, noise included. dlib does not write it down as
`left + (right - left) * u`: it fits it (`find_affine_transform`) as Q * pinv(P), with P the
unit-square corners and Q the box corners, and its SVD-based pinv(P) is off from the exact
inverse by a few ulps. That noise (~1e-14 px) decides on which side a coordinate that lies
exactly on a half pixel rounds, which happens often enough (boxes with power-of-two sides) to
send a tree down the other branch: with the exact transform, 5 of 450 large boxes gave other
landmarks. pinv(P) is a constant, so `_CORNER_PINV` holds dlib's value (dlib-bin 20.0.1, built
without LAPACK), read off dlib with probe models, and Q * pinv(P) and m * p + b are evaluated in
dlib's operation order. The entries near 0 in its last column are known to ~2**-63, which is
below anything that can move a rounding for boxes of sane size; the tests replay the probes.

The similarity transform uses the closed form of Umeyama's solution in 2-D (scale * rotation =
[[a + d, b - c], [c - b, a + d]] / sigma over the cross-covariance [[a, b], [c, d]]) instead of
an SVD: the two agree to a few double ulps, which the narrowing to float32 erases.

Speed: every split of a level is decided in one NumPy step; for trees of depth 4 (the 5-point
model's) each tree's four levels of decisions are then one number, its split decisions as bits,
which a table of all 32,768 patterns turns into the tree's leaf, and deeper trees are walked
down one step per level. The similarity fit of each level runs on Python floats (five points).
A level is then about twenty NumPy calls on arrays of 500-7,500 entries: the 15 levels cost
~2.4 ms per face on this project's 2-core machine (2.9 ms walking the trees and fitting in
NumPy), where dlib's own call (C++, through its Python binding) takes ~1 ms. `predict_many`
walks all the faces of a photo down together, each with its own numbers: the six faces of a
1080p pedestrians frame take 13 ms together against 23 to 34 ms one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["LandmarkError", "ShapePredictor", "ShapePredictorModel"]

Box = tuple[int, int, int, int]

# dlib's pinv() of P = [[0, 1, 1], [0, 0, 1], [1, 1, 1]] (columns: the corners (0, 0), (1, 0),
# (1, 1) of the unit square, homogeneous); the exact inverse is [[-1, 0, 1], [1, -1, 0],
# [0, 1, 0]]. See the module docstring.
_CORNER_PINV = (
    (-1 - 2**-52, -(2**-52), 1 + 2**-52),
    (1 - 3 * 2**-53, -1 + 5 * 2**-53, 3 * 2**-54),
    (0.0, 1 + 2**-52, 3 * 2**-55),
)


class LandmarkError(ValueError):
    """The model arrays or the input image do not fit the shape predictor."""


class ShapePredictorModel(Protocol):
    """The arrays of a dlib shape predictor (facegrid.extractor.convert's ShapePredictorArrays).

    A protocol rather than an import: the core does not depend on the converters (see the
    import-linter contracts in pyproject.toml), it only needs arrays of these shapes.
    """

    @property
    def initial_shape(self) -> npt.NDArray[np.float32]: ...  # (P, 2)
    @property
    def split_features(self) -> npt.NDArray[np.int32]: ...  # (L, T, S, 2)
    @property
    def split_thresholds(self) -> npt.NDArray[np.float32]: ...  # (L, T, S)
    @property
    def leaf_values(self) -> npt.NDArray[np.float32]: ...  # (L, T, S + 1, P, 2)
    @property
    def anchor_idx(self) -> npt.NDArray[np.int32]: ...  # (L, F)
    @property
    def deltas(self) -> npt.NDArray[np.float32]: ...  # (L, F, 2)


class ShapePredictor:
    """dlib's `shape_predictor` over the arrays of a model; predict() is its `operator()`."""

    def __init__(self, model: ShapePredictorModel) -> None:
        initial = np.asarray(model.initial_shape)
        features = np.asarray(model.split_features)
        thresholds = np.asarray(model.split_thresholds)
        leaves = np.asarray(model.leaf_values)
        anchors = np.asarray(model.anchor_idx)
        deltas = np.asarray(model.deltas)
        if initial.ndim != 2 or initial.shape[1] != 2 or initial.shape[0] < 1:
            raise LandmarkError(f"initial shape must be (parts, 2), got {initial.shape}")
        parts = initial.shape[0]
        if features.ndim != 4 or features.shape[3] != 2:
            raise LandmarkError(f"split features must be (L, T, S, 2), got {features.shape}")
        levels, trees, splits, _ = features.shape
        feature_count = anchors.shape[-1] if anchors.ndim == 2 else -1
        expected = {
            "split thresholds": (thresholds.shape, (levels, trees, splits)),
            "leaf values": (leaves.shape, (levels, trees, splits + 1, parts, 2)),
            "anchor indices": (anchors.shape, (levels, feature_count)),
            "deltas": (deltas.shape, (levels, feature_count, 2)),
        }
        for name, (got, wanted) in expected.items():
            if got != wanted:
                raise LandmarkError(f"{name} have shape {got}, expected {wanted}")
        if (splits + 1) & splits:
            raise LandmarkError(f"trees must be complete: {splits} splits is not 2**depth - 1")
        if features.size and (features.min() < 0 or features.max() >= feature_count):
            raise LandmarkError(f"a split feature index is not below {feature_count}")
        if anchors.size and (anchors.min() < 0 or anchors.max() >= parts):
            raise LandmarkError(f"an anchor index is not below {parts} parts")

        self._initial = initial.astype(np.float32)
        self._similarity = _SimilarityFit(self._initial)
        self._depth = splits.bit_length()
        # Per level, flattened so that tree t's node n is entry t * S + n and its leaf k is row
        # t * (S + 1) + k.
        self._idx1 = features[..., 0].reshape(levels, trees * splits).astype(np.intp)
        self._idx2 = features[..., 1].reshape(levels, trees * splits).astype(np.intp)
        self._thresholds = thresholds.reshape(levels, trees * splits).astype(np.float32)
        self._leaves = leaves.reshape(levels, trees * (splits + 1), parts * 2).astype(np.float32)
        self._anchors = anchors.astype(np.intp)
        self._delta_x = np.ascontiguousarray(deltas[..., 0], dtype=np.float32)  # (L, F)
        self._delta_y = np.ascontiguousarray(deltas[..., 1], dtype=np.float32)
        self._node_base = np.arange(trees, dtype=np.intp) * splits
        self._leaf_base = np.arange(trees, dtype=np.intp) * (splits + 1) - splits
        self._trees, self._splits = trees, splits
        # Trees of depth 4 or less: a tree's leaf looked up from its splits' decisions as one
        # number (bit n: node n goes left), instead of walked down one level at a time.
        self._leaf_of = _leaf_table(splits) if splits <= _TABLE_SPLITS else None
        self._bit_values = (2.0 ** np.arange(splits)).astype(np.float32)
        self._first_leaf = self._leaf_base + splits  # tree t's leaf 0 is row t * (S + 1)

    @property
    def num_parts(self) -> int:
        return int(self._initial.shape[0])

    def predict(self, image: npt.NDArray[np.uint8], box: Box) -> npt.NDArray[np.float32]:
        """The landmarks in image for the face in box, as dlib's `shape_predictor(img, rect)`.

        image: HxWx3 RGB or HxW greyscale, uint8. box: (left, top, right, bottom) in pixels,
        inclusive, as a `dlib.rectangle`; it may reach past the image. Returns (parts, 2)
        float32 x, y holding whole pixels (see the module docstring).
        """
        return self.predict_many(image, [box])[0]

    def predict_many(
        self, image: npt.NDArray[np.uint8], boxes: Sequence[Box]
    ) -> list[npt.NDArray[np.float32]]:
        """predict() for several faces of one image, walked down the cascade together: the same
        operations on each face's numbers (so the same bits), with NumPy's per-call cost paid
        once per level for all of them."""
        if not boxes:
            return []
        pixels = _PixelReader(image)
        to_image = _BoxTransform([_check_box(box) for box in boxes])
        faces = len(boxes)
        shape = np.repeat(self._initial[None], faces, axis=0)  # (B, parts, 2)
        for level in range(len(self._anchors)):
            t = np.stack([self._similarity.to(s) for s in shape])  # (B, 2, 2)
            # Rows u and v of tform * delta + anchor, each operation rounded to float32 as in
            # dlib (elementwise NumPy float32 arithmetic; a matmul might fuse or reorder).
            anchored = shape.transpose(0, 2, 1).take(self._anchors[level], axis=2)
            uv = (t[:, :, :1] * self._delta_x[level] + t[:, :, 1:] * self._delta_y[level]) + (
                anchored
            )
            values = pixels.read(to_image.pixels(uv))
            shape = self._cascade_step(level, values, shape)
        points = to_image.pixels(shape.transpose(0, 2, 1)).transpose(0, 2, 1)
        return list(points.astype(np.float32))

    def _cascade_step(
        self, level: int, values: npt.NDArray[np.float32], shape: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """Walk every tree of the level on each face's feature values (B, features) and add
        their leaves to its shape (B, parts, 2)."""
        # Every split of every tree decided at once, then each tree's leaf found from its
        # decisions.
        first = values.take(self._idx1[level], axis=1)
        goes_left = (first - values.take(self._idx2[level], axis=1)) > self._thresholds[level]
        faces = len(shape)
        if self._leaf_of is not None:
            # Each tree's decisions as the bits of one number (a product with the bits'
            # values, exact in float32 below 2**24), which the table maps to its leaf.
            decisions = goes_left.reshape(faces, self._trees, self._splits).view(np.uint8)
            pattern = (decisions @ self._bit_values).astype(np.intp)
            rows = self._first_leaf + self._leaf_of.take(pattern)
        else:
            node = np.zeros((faces, self._trees), dtype=np.intp)
            flat = goes_left.reshape(-1)
            first_node = np.arange(faces)[:, None] * goes_left.shape[1] + self._node_base
            for _ in range(self._depth):
                node = 2 * node + 2 - flat.take(first_node + node)
            rows = self._leaf_base + node
        updates = self._leaves[level].take(rows, axis=0)  # (B, trees, 2P)
        # Tree after tree, as dlib adds them: a cumulative sum is sequential by definition. The
        # shape goes into the first tree's update, the first addition of the sum.
        updates[:, 0] += shape.reshape(faces, -1)
        total: npt.NDArray[np.float32] = np.add.accumulate(updates, axis=1, dtype=np.float32)[:, -1]
        return total.reshape(shape.shape)


# Trees with up to this many splits (depth 4) find their leaves through _leaf_table.
_TABLE_SPLITS = 15


def _leaf_table(splits: int) -> npt.NDArray[np.intp]:
    """For every pattern of decisions of a complete tree's splits (bit n set: node n goes
    left), the leaf (0 to splits) the walk from the root ends in."""
    patterns = np.arange(2**splits, dtype=np.intp)
    node = np.zeros_like(patterns)
    while True:
        inner = node < splits
        if not inner.any():
            return (node - splits).astype(np.intp)
        left = (patterns >> np.where(inner, node, 0)) & 1
        node = np.where(inner, 2 * node + 2 - left, node)


class _SimilarityFit:
    """dlib's find_tform_between_shapes(initial, current): the 2x2 part, narrowed to float32.

    dlib fits the similarity with find_similarity_transform (Umeyama, via an SVD, in double).
    In 2-D the optimal rotation is the angle of (a + d, c - b) for the cross-covariance
    [[a, b], [c, d]] and scale * trace(D S) is that vector's length, so scale * rotation is
    [[a + d, b - c], [c - b, a + d]] / sigma: no SVD and no square root. The sums run point
    after point in doubles (Python floats), in the order of dlib's loops; with a handful of
    points, plain Python arithmetic costs a fraction of NumPy's per-call overhead.
    """

    def __init__(self, initial: npt.NDArray[np.float32]) -> None:
        points = initial.astype(np.float64).tolist()
        count = len(points)
        mean_x = sum(x for x, _ in points) / count
        mean_y = sum(y for _, y in points) / count
        self._source = [(x - mean_x, y - mean_y) for x, y in points]
        self._spread = sum(x * x + y * y for x, y in self._source)
        # dlib: identity for a single landmark; c = 1 and R = I when the source has no spread.
        self._identity = count == 1 or self._spread == 0

    def to(self, current: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if self._identity:
            return np.eye(2, dtype=np.float32)
        points = current.tolist()
        count = len(points)
        mean_x = sum(x for x, _ in points) / count
        mean_y = sum(y for _, y in points) / count
        a = b = c = d = 0.0  # [[sum tx*sx, sum tx*sy], [sum ty*sx, sum ty*sy]]
        for (tx, ty), (sx, sy) in zip(points, self._source, strict=True):
            tx -= mean_x
            ty -= mean_y
            a += tx * sx
            b += tx * sy
            c += ty * sx
            d += ty * sy
        cos_part = (a + d) / self._spread
        sin_part = (c - b) / self._spread
        return np.array([[cos_part, -sin_part], [sin_part, cos_part]], dtype=np.float32)


class _BoxTransform:
    """dlib's `unnormalizing_tform(rect)` of each box: the box-normalised frame to whole image
    pixels."""

    def __init__(self, boxes: Sequence[Box]) -> None:
        p = _CORNER_PINV
        transforms = []
        for box in boxes:
            # dlib takes the corners as float vectors: exact below 2**24, rounded beyond.
            left, top, right, bottom = (float(np.float32(v)) for v in box)
            # m = Q * pinv(P), Q = [[left, right, right], [top, top, bottom]], summed left to
            # right in Python floats (IEEE doubles, no fused multiply-add), as dlib's product.
            transforms.append(
                [
                    [(left * p[0][j] + right * p[1][j]) + right * p[2][j] for j in range(3)],
                    [(top * p[0][j] + top * p[1][j]) + bottom * p[2][j] for j in range(3)],
                ]
            )
        self._m = np.array(transforms, dtype=np.float64)  # (B, 2, 3): [linear part | offset]

    def pixels(self, uv: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """(B, 2, N) points u; v to (B, 2, N) pixels x; y: m * p + b in double, then
        floor(. + 0.5)."""
        m = self._m
        uv64 = uv.astype(np.float64)
        linear = m[:, :, :1] * uv64[:, :1] + m[:, :, 1:2] * uv64[:, 1:2]
        xy: npt.NDArray[np.float64] = linear + m[:, :, 2:]
        return np.floor(xy + 0.5)


class _PixelReader:
    """dlib's get_pixel_intensity at whole pixels, 0 outside the image.

    An RGB pixel reads (r + g + b) // 3 (integer division), a greyscale one its value.
    """

    # (r + g + b) // 3 for every possible sum, as the float the trees compare.
    _THIRDS = (np.arange(3 * 255 + 1) // 3).astype(np.float32)

    def __init__(self, image: npt.NDArray[np.uint8]) -> None:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise LandmarkError("image must be a uint8 NumPy array (RGB or greyscale)")
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise LandmarkError(f"image must be HxW or HxWx3, got shape {image.shape}")
        self._rows, self._cols = image.shape[:2]
        # One row per pixel; a copy only if the caller's array is not contiguous.
        self._rgb = image.ndim == 3
        channels = 3 if self._rgb else 1
        self._pixels = np.ascontiguousarray(image).reshape(self._rows * self._cols, channels)
        self._last = np.array([[self._cols - 1], [self._rows - 1]], dtype=np.float64)

    def read(self, xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
        """Intensities (B, N) at (B, 2, N) whole-pixel coordinates x; y."""
        if not len(self._pixels):
            return np.zeros((xy.shape[0], xy.shape[2]), dtype=np.float32)
        clipped = np.minimum(np.maximum(xy, 0), self._last)
        kept = clipped == xy
        inside = kept[:, 0] & kept[:, 1]
        indices = clipped.astype(np.intp)
        column, row = indices[:, 0], indices[:, 1]
        found = self._pixels.take(row * self._cols + column, axis=0).astype(np.uint16)
        values: npt.NDArray[np.float32]
        if self._rgb:
            values = self._THIRDS.take(found[..., 0] + found[..., 1] + found[..., 2])
        else:
            values = found[..., 0].astype(np.float32)
        values[~inside] = 0
        return values


def _check_box(box: Box) -> Box:
    if len(box) != 4 or not all(isinstance(v, int | np.integer) for v in box):
        raise LandmarkError(f"box must be four integers (left, top, right, bottom), got {box!r}")
    left, top, right, bottom = (int(v) for v in box)
    return left, top, right, bottom
