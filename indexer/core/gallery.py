"""One gallery's vectors on one shard: an HNSW graph (hnswlib) plus an exact store.

New vectors land in the exact store (a plain matrix searched by brute force), so an add costs a
log write and a copy. A background builder moves them into the graph in small steps once the
gallery is big enough for a graph to beat brute force (`HnswParams.graph_min`). A search looks in
both and merges, so a vector is findable the moment its add is acknowledged.

Deletion is soft in the graph: hnswlib hides a marked vector from searches at once, a later add
of the same id reuses its place, and once marked places pass `compact_ratio` of the graph the
builder rebuilds it from the live vectors without stopping searches or writes.
Euclidean distance throughout: the face models are trained for it (dlib's same-person threshold
is 0.6).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import hnswlib
import numpy as np
import numpy.typing as npt

from facegrid.indexer.core.errors import DimensionMismatch
from facegrid.indexer.core.ids import IdSet

# Brute-force search works through the matrix in chunks of this many rows.
SEARCH_CHUNK = 32_768
# Threads hnswlib may use to insert a builder step (each search uses one).
BUILD_THREADS = max(os.cpu_count() or 1, 1)

Ids = npt.NDArray[np.uint64]
Vectors = npt.NDArray[np.float32]
Hit = tuple[int, float]


@dataclass(frozen=True)
class HnswParams:
    # The indexer's defaults (see facegrid.indexer.settings for the measurements).
    m: int = 24
    ef_construction: int = 200
    ef_search: int = 200
    # Below this many vectors a gallery is searched exactly and has no graph.
    graph_min: int = 10_000
    # Rebuild the graph once this share of its places are deleted ones.
    compact_ratio: float = 0.25


class SearchResult(NamedTuple):
    hits: list[Hit]
    # True when the HNSW graph answered part of the search (the seed's "with_index").
    used_index: bool


class ExactStore:
    """Vectors in a growable matrix, searched by brute force; rows move on delete.

    The matrix doubles as rows arrive and is reallocated smaller once it is three quarters
    empty, so a backlog the builder has drained gives its memory back.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._vectors: Vectors = np.empty((16, dim), np.float32)
        self._norms = np.empty(16, np.float32)  # squared norms of the rows
        self._ids: Ids = np.empty(16, np.uint64)
        self._rows: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, face_id: int) -> bool:
        return face_id in self._rows

    @property
    def ids(self) -> Ids:
        return self._ids[: len(self._rows)]

    @property
    def vectors(self) -> Vectors:
        return self._vectors[: len(self._rows)]

    def add(self, ids: Ids, vectors: Vectors) -> None:
        """Append rows; callers have removed any of these ids already."""
        n, needed = len(self._rows), len(self._rows) + len(ids)
        if needed > len(self._ids):
            self._reallocate(max(needed, 2 * len(self._ids)))
        self._vectors[n:needed] = vectors
        self._norms[n:needed] = np.einsum("ij,ij->i", vectors, vectors)
        self._ids[n:needed] = ids
        for row, face_id in enumerate(ids.tolist(), start=n):
            self._rows[face_id] = row

    def remove(self, face_id: int) -> bool:
        row = self._rows.pop(face_id, None)
        if row is None:
            return False
        last = len(self._rows)
        if row != last:
            moved = int(self._ids[last])
            self._ids[row] = moved
            self._vectors[row] = self._vectors[last]
            self._norms[row] = self._norms[last]
            self._rows[moved] = row
        self._maybe_shrink()
        return True

    def take(self, count: int) -> tuple[Ids, Vectors]:
        """Remove and return up to count rows from the end."""
        end = len(self._rows)
        start = max(0, end - count)
        ids, vectors = self._ids[start:end].copy(), self._vectors[start:end].copy()
        for face_id in ids.tolist():
            del self._rows[face_id]
        self._maybe_shrink()
        return ids, vectors

    def _maybe_shrink(self) -> None:
        if len(self._ids) > 1024 and len(self._rows) < len(self._ids) // 4:
            self._reallocate(max(2 * len(self._rows), 16))
            self._rows = dict(self._rows)  # a dict never shrinks in place

    def _reallocate(self, size: int) -> None:
        n = len(self._rows)
        vectors = np.empty((size, self.dim), np.float32)
        norms = np.empty(size, np.float32)
        ids = np.empty(size, np.uint64)
        vectors[:n], norms[:n], ids[:n] = self._vectors[:n], self._norms[:n], self._ids[:n]
        self._vectors, self._norms, self._ids = vectors, norms, ids

    def get(self, face_id: int) -> Vectors:
        vector: Vectors = self._vectors[self._rows[face_id]]
        return vector

    def search(self, vector: Vectors, k: int) -> list[Hit]:
        """The k nearest rows: |x|^2 - 2 x.q by matrix products, chunk by chunk (no temporary
        the size of the store), then the winners' distances computed exactly."""
        n = len(self._rows)
        if n == 0:
            return []
        k = min(k, n)
        best_rows = np.empty(0, np.int64)
        best_d2 = np.empty(0, np.float32)
        for start in range(0, n, SEARCH_CHUNK):
            end = min(start + SEARCH_CHUNK, n)
            d2 = self._norms[start:end] - 2.0 * (self._vectors[start:end] @ vector)
            take = min(k, end - start)
            if take < end - start:
                rows = np.argpartition(d2, take - 1)[:take]
            else:
                rows = np.arange(end - start)
            best_rows = np.concatenate([best_rows, rows + start])
            best_d2 = np.concatenate([best_d2, d2[rows]])
            if len(best_rows) > k:
                keep = np.argpartition(best_d2, k - 1)[:k]
                best_rows, best_d2 = best_rows[keep], best_d2[keep]
        diff = self._vectors[best_rows] - vector
        exact = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        order = np.lexsort((best_rows, exact))
        return [(int(self._ids[best_rows[i]]), float(exact[i])) for i in order]


class GalleryIndex:
    """Vectors of one gallery on one shard: the graph, the exact store, and the deleted marks.

    Not thread-safe: the shard serialises writes and lets reads share (see Shard).
    """

    def __init__(self, dim: int, params: HnswParams) -> None:
        self.dim = dim
        self._params = params
        self._graph: hnswlib.Index | None = None
        self._graph_ids = IdSet()
        # Ids marked deleted in the graph and not yet reused or compacted away.
        self._graph_deleted = IdSet()
        self._exact = ExactStore(dim)
        self._sorted: Ids | None = None
        # While a compaction runs: ids deleted from the graph since it started.
        self._compaction_deletes: list[int] | None = None

    @property
    def params(self) -> HnswParams:
        return self._params

    def configure(self, params: HnswParams) -> None:
        """New HNSW parameters: ef_search at once; M and ef_construction for graphs built from
        now on (the next compaction rebuilds the graph with them)."""
        self._params = params
        if self._graph is not None:
            self._graph.set_ef(params.ef_search)

    # -- size and membership --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._graph_ids) + len(self._exact)

    def __contains__(self, face_id: int) -> bool:
        return face_id in self._graph_ids or face_id in self._exact

    @property
    def indexed(self) -> int:
        return len(self._graph_ids)

    @property
    def unindexed(self) -> int:
        return len(self._exact)

    @property
    def deleted(self) -> int:
        return len(self._graph_deleted)

    @property
    def has_graph(self) -> bool:
        return self._graph is not None

    def space_of(self, face_id: int) -> str:
        """Where a live id is, in the seed's words: "indexed" (the graph) or "linear"."""
        return "indexed" if face_id in self._graph_ids else "linear"

    # -- writes ---------------------------------------------------------------------------------

    def add(self, ids: Ids, vectors: Vectors) -> None:
        """Add or replace vectors; they are searchable at once (exactly until indexed)."""
        if vectors.shape[1] != self.dim:
            raise DimensionMismatch(
                f"vectors have {vectors.shape[1]} values, gallery has {self.dim}"
            )
        self.delete(ids)
        self._exact.add(ids, vectors)
        self._sorted = None

    def delete(self, ids: Ids) -> int:
        removed = 0
        for face_id in ids.tolist():
            if self._exact.remove(face_id):
                removed += 1
            elif face_id in self._graph_ids:
                assert self._graph is not None
                self._graph.mark_deleted(face_id)
                self._graph_ids.discard(face_id)
                self._graph_deleted.add(face_id)
                if self._compaction_deletes is not None:
                    self._compaction_deletes.append(face_id)
                removed += 1
        if removed:
            self._sorted = None
        return removed

    # -- background work ------------------------------------------------------------------------

    def pending(self) -> int:
        """Vectors the builder should move into the graph now."""
        if self._compaction_deletes is not None:
            return 0
        if self._graph is None and len(self) < self._params.graph_min:
            return 0
        return len(self._exact)

    def build_step(self, count: int) -> int:
        """Move up to count vectors from the exact store into the graph; returns how many."""
        if not self.pending():
            return 0
        graph = self._graph
        if graph is None:
            graph = self._graph = self._new_graph(max(count, len(self._exact)))
        ids, vectors = self._exact.take(count)
        # A deleted id coming back takes its old place (hnswlib unmarks and updates it in place).
        reused = ids[self._graph_deleted.contains(ids)]
        self._graph_deleted.difference_update(reused.tolist())
        needed = graph.get_current_count() + len(ids) - len(reused)
        if needed > graph.get_max_elements():
            graph.resize_index(max(needed, 2 * graph.get_max_elements()))
        graph.add_items(vectors, ids, num_threads=BUILD_THREADS)
        self._graph_ids.update(ids)
        return len(ids)

    def busy(self) -> bool:
        """True while the builder has work here, a compaction in flight included."""
        return (
            bool(self.pending()) or self.needs_compaction() or self._compaction_deletes is not None
        )

    def needs_compaction(self) -> bool:
        return (
            self._graph is not None
            and self._compaction_deletes is None
            and len(self._graph_deleted) >= 1000
            and len(self._graph_deleted)
            >= self._params.compact_ratio * (len(self._graph_ids) + len(self._graph_deleted))
        )

    def begin_compaction(self) -> Ids:
        """Start a rebuild of the graph; returns the ids to copy (called under the write lock)."""
        self._compaction_deletes = []
        return self._graph_ids.array()

    def copy_for_compaction(self, ids: Ids) -> tuple[Ids, Vectors]:
        """The vectors of those ids still in the graph (called under the read lock)."""
        assert self._graph is not None
        live = ids[self._graph_ids.contains(ids)]
        if not len(live):
            return np.empty(0, np.uint64), np.empty((0, self.dim), np.float32)
        vectors = self._graph.get_items(live, return_type="numpy")
        return live, np.asarray(vectors, np.float32).reshape(-1, self.dim)

    def new_graph_for_compaction(self, capacity: int) -> hnswlib.Index:
        return self._new_graph(capacity)

    def finish_compaction(self, graph: hnswlib.Index, copied: IdSet) -> None:
        """Swap in the rebuilt graph (called under the write lock)."""
        assert self._compaction_deletes is not None
        deleted = IdSet()
        for face_id in self._compaction_deletes:
            if face_id in copied:
                graph.mark_deleted(face_id)
                copied.discard(face_id)
                deleted.add(face_id)
        self._graph = graph
        self._graph_ids = copied
        self._graph_deleted = deleted
        self._compaction_deletes = None

    def _new_graph(self, capacity: int) -> hnswlib.Index:
        graph = hnswlib.Index(space="l2", dim=self.dim)
        graph.init_index(
            max_elements=max(capacity, 1024),
            M=self._params.m,
            ef_construction=self._params.ef_construction,
        )
        graph.set_ef(self._params.ef_search)
        graph.set_num_threads(1)
        return graph

    # -- reads ----------------------------------------------------------------------------------

    def get(self, ids: Ids) -> tuple[Ids, Vectors]:
        found = [i for i in ids.tolist() if i in self]
        vectors = np.empty((len(found), self.dim), np.float32)
        in_graph = [(row, i) for row, i in enumerate(found) if i in self._graph_ids]
        for row, face_id in enumerate(found):
            if face_id in self._exact:
                vectors[row] = self._exact.get(face_id)
        if in_graph:
            assert self._graph is not None
            rows, labels = zip(*in_graph, strict=True)
            vectors[list(rows)] = self._graph.get_items(list(labels), return_type="numpy")
        return np.array(found, np.uint64), vectors

    def search(
        self, vector: Vectors, top_n: int, max_distance: float, *, exact: bool = False
    ) -> SearchResult:
        if vector.shape != (self.dim,):
            raise DimensionMismatch(f"query has {vector.shape[0]} values, gallery has {self.dim}")
        hits = self._exact.search(vector, top_n)
        used_index = False
        if self._graph_ids:
            if exact:
                hits += self._search_graph_exactly(vector, top_n)
            else:
                hits += self._search_graph(vector, top_n)
                used_index = True
            hits.sort(key=lambda hit: hit[1])
            hits = hits[:top_n]
        if max_distance:
            hits = [hit for hit in hits if hit[1] <= max_distance]
        return SearchResult(hits, used_index)

    def _search_graph(self, vector: Vectors, top_n: int) -> list[Hit]:
        assert self._graph is not None
        # hnswlib searches with max(ef, k) candidates, so a large top_n needs no set_ef (which
        # would race between concurrent readers).
        k = min(top_n, len(self._graph_ids))
        try:
            labels, squared = self._graph.knn_query(vector.reshape(1, -1), k=k, num_threads=1)
        except RuntimeError:
            # Too few live neighbours reachable (many deleted places): answer exactly instead.
            return self._search_graph_exactly(vector, top_n)
        return [
            (int(label), math.sqrt(max(sq, 0.0)))
            for label, sq in zip(labels[0].tolist(), squared[0].tolist(), strict=True)
        ]

    def _search_graph_exactly(self, vector: Vectors, top_n: int) -> list[Hit]:
        best: list[Hit] = []
        ids = self._graph_ids.array()
        for start in range(0, len(ids), 65536):
            chunk = ExactStore(self.dim)
            labels, vectors = self.copy_for_compaction(ids[start : start + 65536])
            chunk.add(labels, vectors)
            best = sorted(best + chunk.search(vector, top_n), key=lambda hit: hit[1])[:top_n]
        return best

    def list_ids(self, after_id: int, limit: int) -> tuple[Ids, bool]:
        if self._sorted is None:
            self._sorted = np.sort(np.concatenate([self._graph_ids.array(), self._exact.ids]))
        start = int(np.searchsorted(self._sorted, np.uint64(after_id), side="right"))
        page = self._sorted[start : start + limit]
        return page, start + limit < len(self._sorted)

    # -- persistence ----------------------------------------------------------------------------

    def save(self, folder: Path, stem: str) -> list[Path]:
        """Write the graph (hnswlib's format, deleted marks included), its live and deleted ids,
        and the exact store; returns the files written."""
        files = []
        if self._graph is not None:
            graph = folder / f"{stem}.hnsw"
            self._graph.save_index(str(graph))
            files.append(graph)
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "graph_ids": self._graph_ids.array(),
            "graph_deleted": self._graph_deleted.array(),
            "exact_ids": self._exact.ids,
            "exact_vectors": self._exact.vectors,
        }
        for name, array in arrays.items():
            path = folder / f"{stem}.{name}.npy"
            np.save(path, array)
            files.append(path)
        return files

    @classmethod
    def load(cls, dim: int, params: HnswParams, folder: Path, stem: str) -> GalleryIndex:
        gallery = cls(dim, params)
        graph = folder / f"{stem}.hnsw"
        if graph.exists():
            gallery._graph = hnswlib.Index(space="l2", dim=dim)
            gallery._graph.load_index(str(graph))
            gallery._graph.set_ef(params.ef_search)
            gallery._graph.set_num_threads(1)
        gallery._graph_ids = IdSet(np.load(folder / f"{stem}.graph_ids.npy"))
        gallery._graph_deleted = IdSet(np.load(folder / f"{stem}.graph_deleted.npy"))
        gallery._exact.add(
            np.load(folder / f"{stem}.exact_ids.npy"),
            np.load(folder / f"{stem}.exact_vectors.npy"),
        )
        return gallery
