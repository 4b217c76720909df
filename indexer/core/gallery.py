"""One gallery's vectors in an HNSW graph (hnswlib), keyed by 64-bit face id."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import hnswlib
import numpy as np
import numpy.typing as npt

from facegrid.indexer.core.errors import DimensionMismatch

Ids = npt.NDArray[np.uint64]
Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True)
class HnswParams:
    m: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    initial_capacity: int = 1024


class GalleryIndex:
    """Vectors of one gallery on one shard.

    Euclidean distance, because that is the metric the face models are trained for (dlib's
    same-person threshold is 0.6). Deleted ids are marked in the graph and their places reused.
    """

    def __init__(self, dim: int, params: HnswParams) -> None:
        self.dim = dim
        self._params = params
        self._index = hnswlib.Index(space="l2", dim=dim)
        self._index.init_index(
            max_elements=params.initial_capacity,
            M=params.m,
            ef_construction=params.ef_construction,
            allow_replace_deleted=True,
        )
        self._index.set_ef(params.ef_search)
        self._ids: set[int] = set()
        self._sorted: Ids | None = None

    def save(self, graph: Path, ids: Path) -> None:
        """Write the graph (hnswlib's own format, deleted marks included) and the live ids."""
        self._index.save_index(str(graph))
        np.save(ids, np.array(sorted(self._ids), dtype=np.uint64))

    @classmethod
    def load(cls, dim: int, params: HnswParams, graph: Path, ids: Path) -> GalleryIndex:
        gallery = cls.__new__(cls)
        gallery.dim = dim
        gallery._params = params
        gallery._index = hnswlib.Index(space="l2", dim=dim)
        gallery._index.load_index(str(graph), allow_replace_deleted=True)
        gallery._index.set_ef(params.ef_search)
        gallery._ids = set(np.load(ids).tolist())
        gallery._sorted = None
        return gallery

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, face_id: int) -> bool:
        return face_id in self._ids

    def add(self, ids: Ids, vectors: Vectors) -> None:
        if vectors.shape[1] != self.dim:
            raise DimensionMismatch(
                f"vectors have {vectors.shape[1]} values, gallery has {self.dim}"
            )
        existing = [i for i in ids.tolist() if i in self._ids]
        if existing:
            # hnswlib keeps one point per label: mark the old ones deleted, then their places
            # are reused by add_items(replace_deleted=True).
            for face_id in existing:
                self._index.mark_deleted(face_id)
            self._ids.difference_update(existing)
        needed = self._index.get_current_count() + len(ids)
        if needed > self._index.get_max_elements():
            self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
        self._index.add_items(vectors, ids, replace_deleted=True)
        self._ids.update(ids.tolist())
        self._sorted = None

    def delete(self, ids: Ids) -> int:
        present = [i for i in ids.tolist() if i in self._ids]
        for face_id in present:
            self._index.mark_deleted(face_id)
        self._ids.difference_update(present)
        if present:
            self._sorted = None
        return len(present)

    def get(self, ids: Ids) -> tuple[Ids, Vectors]:
        found = np.array([i for i in ids.tolist() if i in self._ids], dtype=np.uint64)
        if not len(found):
            return found, np.empty((0, self.dim), np.float32)
        vectors = np.asarray(self._index.get_items(found.tolist()), dtype=np.float32)
        return found, vectors.reshape(len(found), self.dim)

    def search(self, vector: Vectors, top_n: int, max_distance: float) -> list[tuple[int, float]]:
        if vector.shape != (self.dim,):
            raise DimensionMismatch(f"query has {vector.shape[0]} values, gallery has {self.dim}")
        k = min(top_n, len(self._ids))
        if k == 0:
            return []
        self._index.set_ef(max(self._params.ef_search, k))
        labels, squared = self._index.knn_query(vector.reshape(1, -1), k=k)
        hits = []
        for label, sq in zip(labels[0].tolist(), squared[0].tolist(), strict=True):
            distance = math.sqrt(max(sq, 0.0))
            if max_distance and distance > max_distance:
                break
            hits.append((int(label), distance))
        return hits

    def list_ids(self, after_id: int, limit: int) -> tuple[Ids, bool]:
        if self._sorted is None:
            self._sorted = np.array(sorted(self._ids), dtype=np.uint64)
        start = int(np.searchsorted(self._sorted, np.uint64(after_id), side="right"))
        page = self._sorted[start : start + limit]
        return page, start + limit < len(self._sorted)
