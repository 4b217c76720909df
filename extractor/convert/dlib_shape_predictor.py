"""Read dlib's `shape_predictor` .dat file into plain NumPy arrays, shippable as one .npz.

dlib's 5-point face landmark model is an ensemble of regression trees (Kazemi & Sullivan). Its
`serialize()` stream, read from dlib's `shape_predictor.h`, is:

- version (integer, 1);
- the initial shape: a `matrix<float,0,1>` of 2 * parts values, x and y interleaved, in the
  box-normalised frame (the detection box maps to the unit square);
- the forests: one vector per cascade level, each a vector of regression trees; a tree is its
  split nodes (idx1, idx2 as integers, thresh as a float) in breadth-first order, then its leaf
  values (one `matrix<float,0,1>` shape update per leaf);
- anchor_idx: per level, for each feature pixel the shape part it hangs off;
- deltas: per level, for each feature pixel its offset (x, y floats) from that part.

Every number in the stream is a dlib integer (floats are two of them: mantissa, exponent), so the
~3 million values of the trees are decoded in bulk here rather than one `DlibReader` call at a
time (5 s that way, about 1 s this way); `DlibReader` still reads the header.

The arrays are stored per level with uniform sizes (every level the same number of trees and
feature pixels, every tree the same depth): that is what dlib's trainer writes, and it lets the
predictor evaluate all trees of a level at once. A file that breaks the uniformity is refused
with a clear message rather than padded.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import numpy.typing as npt

from facegrid.extractor.convert.dlib_format import DlibFormatError, DlibReader

SHAPE_PREDICTOR_VERSION = 1
MAX_VALUES_PER_SHAPE = 2 * 10_000  # far beyond any landmark model (68 or 194 parts)

# dlib's float serialisation writes these exponents for inf, -inf and NaN.
_SPECIAL_EXPONENTS = {32000: np.inf, 32001: -np.inf, 32002: np.nan}


@dataclass(frozen=True, eq=False)
class ShapePredictorArrays:
    """A dlib shape predictor as arrays; L levels, T trees, S = 2**depth - 1 splits, P parts.

    initial_shape     (P, 2)          float32  mean shape in the box-normalised frame
    split_features    (L, T, S, 2)    int32    per split node: the two feature pixel indices
    split_thresholds  (L, T, S)       float32  go to the left child when f[i1] - f[i2] > thresh
    leaf_values       (L, T, S+1, P, 2) float32  shape update of each leaf
    anchor_idx        (L, F)          int32    part each feature pixel is anchored to
    deltas            (L, F, 2)       float32  offset of each feature pixel from its anchor
    """

    initial_shape: npt.NDArray[np.float32]
    split_features: npt.NDArray[np.int32]
    split_thresholds: npt.NDArray[np.float32]
    leaf_values: npt.NDArray[np.float32]
    anchor_idx: npt.NDArray[np.int32]
    deltas: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        _check_consistent(self)

    @property
    def num_parts(self) -> int:
        return int(self.initial_shape.shape[0])

    @property
    def num_levels(self) -> int:
        return int(self.split_features.shape[0])

    def to_npz(self, path: str | Path) -> None:
        np.savez(Path(path), **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_npz(cls, path: str | Path) -> ShapePredictorArrays:
        names = [f.name for f in fields(cls)]
        with np.load(Path(path), allow_pickle=False) as archive:
            missing = sorted(set(names) - set(archive.files))
            if missing:
                raise DlibFormatError(f"{path}: not a shape predictor archive, missing {missing}")
            return cls(**{name: archive[name] for name in names})


def _check_consistent(arrays: ShapePredictorArrays) -> None:
    """Dtypes and shapes agree with each other and every index is in range."""
    wanted = {
        "initial_shape": (np.float32, 2),
        "split_features": (np.int32, 4),
        "split_thresholds": (np.float32, 3),
        "leaf_values": (np.float32, 5),
        "anchor_idx": (np.int32, 2),
        "deltas": (np.float32, 3),
    }
    for name, (dtype, ndim) in wanted.items():
        value = getattr(arrays, name)
        if not isinstance(value, np.ndarray) or value.dtype != dtype or value.ndim != ndim:
            raise DlibFormatError(f"shape predictor {name}: expected a {ndim}-D {dtype.__name__}")
    parts = arrays.initial_shape.shape[0]
    levels, trees, splits, _ = arrays.split_features.shape
    features = arrays.anchor_idx.shape[1]
    expected = {
        "initial_shape": (parts, 2),
        "split_features": (levels, trees, splits, 2),
        "split_thresholds": (levels, trees, splits),
        "leaf_values": (levels, trees, splits + 1, parts, 2),
        "anchor_idx": (levels, features),
        "deltas": (levels, features, 2),
    }
    for name, shape in expected.items():
        if getattr(arrays, name).shape != shape:
            raise DlibFormatError(
                f"shape predictor {name}: shape {getattr(arrays, name).shape}, expected {shape}"
            )
    if parts < 1 or (splits + 1) & splits:
        raise DlibFormatError(f"shape predictor: {parts} parts and {splits} splits per tree")
    if arrays.split_features.size and not (
        arrays.split_features.min() >= 0 and arrays.split_features.max() < features
    ):
        raise DlibFormatError(f"shape predictor: a split feature index is not below {features}")
    if arrays.anchor_idx.size and not (
        arrays.anchor_idx.min() >= 0 and arrays.anchor_idx.max() < parts
    ):
        raise DlibFormatError(f"shape predictor: an anchor index is not below {parts} parts")


# --- bulk decoding of dlib integers ------------------------------------------------------------


def _token_starts(data: bytes, pos: int) -> npt.NDArray[np.int64]:
    """Start offsets of the dlib integers that fill data[pos:] back to back."""
    starts: list[int] = []
    append = starts.append
    end = len(data)
    while pos < end:
        append(pos)
        pos += 1 + (data[pos] & 0x0F)
    if pos != end:
        raise DlibFormatError(f"unexpected end of stream inside the integer at byte {starts[-1]}")
    return np.asarray(starts, dtype=np.int64)


def _decode_ints(data: bytes, starts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The values of the dlib integers at starts (control byte, then little-endian bytes)."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    control = buffer[starts]
    sizes = control & 0x0F
    bad = (sizes > 8) | ((control & 0x70) != 0)
    if bad.any():
        at = int(starts[np.argmax(bad)])
        raise DlibFormatError(f"byte {at} is not a dlib integer control byte ({data[at]:#04x})")
    magnitude = np.zeros(len(starts), dtype=np.uint64)
    last = len(buffer) - 1
    for k in range(int(sizes.max(initial=0))):
        byte = buffer[np.minimum(starts + (1 + k), last)]
        byte = np.where(sizes > k, byte, 0).astype(np.uint64)
        magnitude |= byte << np.uint64(8 * k)
    if (magnitude > np.uint64(np.iinfo(np.int64).max)).any():
        raise DlibFormatError("a dlib integer does not fit in 63 bits")
    values = magnitude.astype(np.int64)
    return np.where((control & 0x80) != 0, -values, values)


def _as_floats(
    mantissa: npt.NDArray[np.int64], exponent: npt.NDArray[np.int64], what: str
) -> npt.NDArray[np.float32]:
    """mantissa * 2**exponent, as `DlibReader.read_float` computes it, narrowed to float32.

    dlib writes a float32 with a mantissa of at most 24 bits, so the double is exact and the
    narrowing loses nothing; a value that does not fit a float32 means a garbled stream.
    """
    special = np.isin(exponent, list(_SPECIAL_EXPONENTS))
    plain = np.where(special, 0, exponent)
    if plain.size and (plain.min() < -1100 or plain.max() > 1100):
        raise DlibFormatError(f"{what}: float exponent out of range")
    with np.errstate(over="ignore"):
        values = np.ldexp(mantissa.astype(np.float64), plain.astype(np.int32))
    if not (np.abs(values) <= np.finfo(np.float32).max).all():
        raise DlibFormatError(f"{what}: a value does not fit in a float32")
    for code, value in _SPECIAL_EXPONENTS.items():
        values[exponent == code] = value
    return values.astype(np.float32)


class _Ints:
    """A cursor over the decoded integers that remain after the header."""

    def __init__(self, values: npt.NDArray[np.int64], starts: npt.NDArray[np.int64]) -> None:
        self.values = values
        self.starts = starts
        self.index = 0

    def where(self) -> str:
        if self.index < len(self.starts):
            return f"byte {int(self.starts[self.index])}"
        return "the end of the stream"

    def take(self, count: int, what: str) -> npt.NDArray[np.int64]:
        if count < 0 or self.index + count > len(self.values):
            raise DlibFormatError(f"{what}: stream ends early (at {self.where()})")
        chunk = self.values[self.index : self.index + count]
        self.index += count
        return chunk

    def peek_count(self, what: str, limit: int) -> int:
        """The next integer as a count, without moving past it."""
        if self.index >= len(self.values):
            raise DlibFormatError(f"{what}: stream ends early")
        value = int(self.values[self.index])
        if not 0 <= value <= limit:
            raise DlibFormatError(f"{what}: implausible count {value} (at {self.where()})")
        return value

    def count(self, what: str, limit: int) -> int:
        value = self.peek_count(what, limit)
        self.index += 1
        return value

    def expect(self, wanted: int, what: str) -> None:
        got = int(self.take(1, what)[0])
        if got != wanted:
            raise DlibFormatError(f"{what}: expected {wanted}, got {got} (before {self.where()})")

    def floats(self, count: int, what: str) -> npt.NDArray[np.float32]:
        pairs = self.take(2 * count, what).reshape(count, 2)
        return _as_floats(pairs[:, 0], pairs[:, 1], what)


# --- the shape predictor -----------------------------------------------------------------------


def _check_tree_layout(block: npt.NDArray[np.int64], level: int, splits: int, parts: int) -> None:
    """Every tree row of block has splits split nodes, splits + 1 leaves, leaves of 2*parts."""
    leaf_dims = block[:, 2 + 4 * splits :].reshape(len(block), splits + 1, 2 + 4 * parts)[..., :2]
    problems = {
        "number of splits": block[:, 0] != splits,
        "number of leaves": block[:, 1 + 4 * splits] != splits + 1,
        # dlib writes a matrix's dimensions negated (newer files) or plain (older ones).
        f"leaf size (must be {2 * parts}x1)": (
            (np.abs(leaf_dims[..., 0]) != 2 * parts) | (np.abs(leaf_dims[..., 1]) != 1)
        ).any(axis=1),
    }
    for what, bad in problems.items():
        if bad.any():
            tree = int(np.argmax(bad))
            raise DlibFormatError(
                f"level {level} tree {tree}: bad {what} (all trees must have {splits} splits "
                f"and {splits + 1} leaves of {2 * parts} values)"
            )


def _expect_end(ints: _Ints) -> None:
    if ints.index != len(ints.values):
        raise DlibFormatError(f"trailing data after the shape predictor at {ints.where()}")


def parse(dat: bytes) -> ShapePredictorArrays:
    """The arrays of a dlib shape_predictor .dat file; DlibFormatError if it is not one."""
    reader = DlibReader(dat)
    reader.expect_int(SHAPE_PREDICTOR_VERSION, "shape_predictor version")
    # DlibReader.float_matrix would trust any size; a garbled one must fail fast instead.
    rows, cols = abs(reader.read_int()), abs(reader.read_int())
    if cols != 1 or rows == 0 or rows % 2 or rows > MAX_VALUES_PER_SHAPE:
        raise DlibFormatError(f"initial shape is {rows}x{cols}, expected (2 * parts)x1")
    pairs = np.array([reader.read_int() for _ in range(2 * rows)], dtype=np.int64)
    initial = _as_floats(pairs[0::2], pairs[1::2], "initial shape")
    parts = rows // 2
    starts = _token_starts(dat, reader.pos)
    ints = _Ints(_decode_ints(dat, starts), starts)
    limit = len(starts)  # no count can exceed the number of integers left

    levels = ints.count("number of cascade levels", limit)
    if levels == 0:
        # Legal for dlib (it then returns the mean shape placed in the box).
        ints.expect(0, "number of anchor index lists")
        ints.expect(0, "number of delta lists")
        _expect_end(ints)
        return ShapePredictorArrays(
            initial_shape=initial.reshape(parts, 2),
            split_features=np.zeros((0, 0, 0, 2), dtype=np.int32),
            split_thresholds=np.zeros((0, 0, 0), dtype=np.float32),
            leaf_values=np.zeros((0, 0, 1, parts, 2), dtype=np.float32),
            anchor_idx=np.zeros((0, 0), dtype=np.int32),
            deltas=np.zeros((0, 0, 2), dtype=np.float32),
        )
    # A tree is its split count, 4 integers per split, its leaf count, and per leaf the matrix
    # dimensions and 2 integers per value: a fixed run of integers once the split count is known,
    # so a whole level is checked and sliced at once.
    tree_blocks = []
    trees = splits = 0
    for level in range(levels):
        level_trees = ints.count(f"level {level}: number of trees", limit)
        if level == 0:
            trees = level_trees
            if trees == 0:
                raise DlibFormatError("level 0 of the shape predictor has no trees")
            splits = ints.peek_count("level 0 tree 0: number of splits", limit)
        if level_trees != trees:
            raise DlibFormatError(
                f"level {level} has {level_trees} trees where level 0 has {trees}; only uniform "
                "forests are supported"
            )
        per_tree = 2 + 4 * splits + (splits + 1) * (2 + 4 * parts)
        block = ints.take(trees * per_tree, f"level {level}: trees").reshape(trees, per_tree)
        _check_tree_layout(block, level, splits, parts)
        tree_blocks.append(block)
    forests = np.stack(tree_blocks)  # (levels, trees, per_tree)
    nodes = forests[:, :, 1 : 1 + 4 * splits].reshape(levels, trees, splits, 4)
    leaf_ints = forests[:, :, 2 + 4 * splits :].reshape(levels, trees, splits + 1, 2 + 4 * parts)
    leaf_pairs = leaf_ints[..., 2:].reshape(levels, trees, splits + 1, parts, 2, 2)

    ints.expect(levels, "number of anchor index lists")
    anchors = []
    feature_count = ints.peek_count("level 0: number of feature pixels", limit)
    for level in range(levels):
        count = ints.count(f"level {level}: number of feature pixels", limit)
        if count != feature_count:
            raise DlibFormatError(
                f"level {level}: {count} feature pixels where level 0 has {feature_count}; only "
                "uniform levels are supported"
            )
        anchors.append(ints.take(count, f"level {level}: anchor indices"))
    ints.expect(levels, "number of delta lists")
    deltas = []
    for level in range(levels):
        ints.expect(feature_count, f"level {level}: number of deltas")
        deltas.append(ints.floats(2 * feature_count, f"level {level}: deltas"))
    _expect_end(ints)

    split_features = nodes[..., :2]
    anchor_idx = np.stack(anchors)
    # Range-check before narrowing to int32, so that a wild index cannot wrap into range.
    for name, values, bound in (
        ("split feature index", split_features, feature_count),
        ("anchor index", anchor_idx, parts),
    ):
        if values.size and not (values.min() >= 0 and values.max() < bound):
            raise DlibFormatError(f"a {name} is out of range (must be below {bound})")
    return ShapePredictorArrays(
        initial_shape=initial.reshape(parts, 2),
        split_features=split_features.astype(np.int32),
        split_thresholds=_as_floats(nodes[..., 2], nodes[..., 3], "split thresholds"),
        leaf_values=_as_floats(leaf_pairs[..., 0], leaf_pairs[..., 1], "leaf values"),
        anchor_idx=anchor_idx.astype(np.int32),
        deltas=np.stack(deltas).reshape(levels, feature_count, 2),
    )
