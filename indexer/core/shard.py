"""A shard: its galleries, rebuilt from the write-ahead log on start.

Writes are validated completely, then logged and applied under one lock, then made durable
(fsync) outside it, so concurrent writers share fsyncs (group commit). A write that fails
validation changes nothing; a write is acknowledged only after its fsync, so it survives a
crash. A reader may see a write a moment before it is durable.
Reads take the same lock: hnswlib does not promise a search is safe during a resize.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegrid.files import fsync_path, sha256_of
from facegrid.indexer.core.errors import (
    DimensionMismatch,
    DuplicateId,
    GalleryNotFound,
    InvalidRequest,
    SnapshotDamaged,
    SnapshotNeeded,
)
from facegrid.indexer.core.gallery import GalleryIndex, HnswParams, Ids, Vectors
from facegrid.indexer.core.wal import Op, WalRecord, WriteAheadLog

MAX_GALLERY_NAME = 48
SNAPSHOT_PREFIX = "snapshot-"
SNAPSHOT_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class GalleryStats:
    name: str
    count: int
    dim: int


@dataclass(frozen=True)
class ShardStats:
    name: str
    lsn: int
    galleries: list[GalleryStats]


def _check_gallery(name: str) -> None:
    if not name or len(name) > MAX_GALLERY_NAME:
        raise InvalidRequest(f"gallery name must be 1..{MAX_GALLERY_NAME} characters")


class Shard:
    def __init__(
        self,
        name: str,
        data_dir: Path,
        params: HnswParams | None = None,
        *,
        fsync: bool = True,
        snapshot_every: int = 0,
    ) -> None:
        """Recover: load the newest snapshot (checked), then replay the log after it.

        snapshot_every: take a snapshot once this many records are logged after the last one
        (0: only when asked).
        """
        self.name = name
        self._dir = data_dir
        self._params = params or HnswParams()
        self._galleries: dict[str, GalleryIndex] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[int], None]] = []
        self._snapshot_every = snapshot_every
        data_dir.mkdir(parents=True, exist_ok=True)
        self.snapshot_lsn = self._load_snapshot()
        self._wal = WriteAheadLog(data_dir / "wal.log", fsync=fsync)
        if self._wal.base_lsn > self.snapshot_lsn:
            self._wal.close()
            raise SnapshotDamaged(
                f"{data_dir / 'wal.log'} continues snapshot {self._wal.base_lsn}, which is missing"
            )
        for record in self._wal.replay():
            if record.lsn > self.snapshot_lsn:
                self._apply(record)

    @property
    def lsn(self) -> int:
        return self._wal.last_lsn

    @property
    def wal_bytes(self) -> int:
        return self._wal.path.stat().st_size

    # -- writes ---------------------------------------------------------------------------------

    def add(self, gallery: str, ids: Ids, vectors: Vectors, *, upsert: bool = False) -> int:
        """Add vectors under ids; the gallery is created by its first add. Returns the lsn."""
        _check_gallery(gallery)
        ids = np.asarray(ids, dtype=np.uint64)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(ids) != len(vectors) or not len(ids):
            raise InvalidRequest("need one vector per id, and at least one")
        if vectors.shape[1] == 0:
            raise InvalidRequest("vectors are empty")
        if not np.isfinite(vectors).all():
            raise InvalidRequest("vectors contain NaN or infinity")
        if len(np.unique(ids)) != len(ids):
            raise InvalidRequest("the same id appears twice in one call")
        with self._lock:
            index = self._galleries.get(gallery)
            if index is not None:
                if index.dim != vectors.shape[1]:
                    raise DimensionMismatch(
                        f"gallery {gallery!r} holds {index.dim}-value vectors, "
                        f"got {vectors.shape[1]}"
                    )
                if not upsert:
                    taken = [i for i in ids.tolist() if i in index]
                    if taken:
                        raise DuplicateId(f"id {taken[0]} is already in gallery {gallery!r}")
            record = self._wal.write(WalRecord(Op.ADD, gallery, ids, vectors, upsert))
            self._apply(record)
        self._wal.sync(record.lsn)
        self._notify(record.lsn)
        self._maybe_snapshot()
        return record.lsn

    def delete(self, gallery: str, ids: Ids) -> tuple[int, int]:
        """Delete ids (absent ones are ignored); returns (deleted, lsn)."""
        _check_gallery(gallery)
        ids = np.asarray(ids, dtype=np.uint64)
        with self._lock:
            index = self._galleries.get(gallery)
            present = [i for i in ids.tolist() if index is not None and i in index]
            if not present:
                return 0, self.lsn
            record = self._wal.write(
                WalRecord(Op.DELETE, gallery, np.array(present, dtype=np.uint64))
            )
            self._apply(record)
        self._wal.sync(record.lsn)
        self._notify(record.lsn)
        self._maybe_snapshot()
        return len(present), record.lsn

    def drop_gallery(self, gallery: str) -> tuple[int, int]:
        """Forget a gallery and all its vectors; returns (deleted, lsn). Absent is not an error."""
        _check_gallery(gallery)
        with self._lock:
            index = self._galleries.get(gallery)
            if index is None:
                return 0, self.lsn
            count = len(index)
            record = self._wal.write(WalRecord(Op.DROP, gallery))
            self._apply(record)
        self._wal.sync(record.lsn)
        self._notify(record.lsn)
        self._maybe_snapshot()
        return count, record.lsn

    def _apply(self, record: WalRecord) -> None:
        if record.op is Op.ADD:
            assert record.vectors is not None
            index = self._galleries.get(record.gallery)
            if index is None:
                index = self._galleries[record.gallery] = GalleryIndex(
                    record.vectors.shape[1], self._params
                )
            index.add(record.ids, record.vectors)
        elif record.op is Op.DELETE:
            if record.gallery in self._galleries:
                self._galleries[record.gallery].delete(record.ids)
        elif record.op is Op.DROP:
            self._galleries.pop(record.gallery, None)

    # -- reads ----------------------------------------------------------------------------------

    def _gallery(self, gallery: str) -> GalleryIndex:
        index = self._galleries.get(gallery)
        if index is None:
            raise GalleryNotFound(f"gallery {gallery!r} has no vectors on shard {self.name!r}")
        return index

    def get(self, gallery: str, ids: Ids) -> tuple[Ids, Vectors]:
        with self._lock:
            index = self._galleries.get(gallery)
            if index is None:
                return np.empty(0, np.uint64), np.empty((0, 0), np.float32)
            return index.get(np.asarray(ids, dtype=np.uint64))

    def search(
        self, gallery: str, vector: Vectors, top_n: int, max_distance: float = 0.0
    ) -> list[tuple[int, float]]:
        """The top_n nearest ids with their Euclidean distances; an unknown gallery has none."""
        if top_n <= 0:
            raise InvalidRequest("top_n must be positive")
        vector = np.asarray(vector, dtype=np.float32)
        if not np.isfinite(vector).all():
            raise InvalidRequest("query contains NaN or infinity")
        # hnswlib may not search while the same graph is resized or has deleted places
        # replaced, so searches take the write lock too.
        with self._lock:
            index = self._galleries.get(gallery)
            if index is None:
                return []
            return index.search(vector, top_n, max_distance)

    def list_ids(self, gallery: str, after_id: int, limit: int) -> tuple[Ids, bool]:
        if limit <= 0:
            raise InvalidRequest("limit must be positive")
        with self._lock:
            return self._gallery(gallery).list_ids(after_id, limit)

    def stats(self) -> ShardStats:
        with self._lock:
            galleries = [
                GalleryStats(name, len(index), index.dim)
                for name, index in sorted(self._galleries.items())
            ]
            return ShardStats(self.name, self.lsn, galleries)

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self) -> int:
        """Write every gallery to a new snapshot, then restart the log after it; returns its lsn.

        Files go to a temporary folder, are fsynced, listed with their sha256 in a manifest and
        renamed into place as a whole; only then is the log emptied and the older snapshot
        removed. A crash at any point leaves a recoverable pair of snapshot and log.
        """
        with self._lock:
            lsn = self._wal.last_lsn
            if lsn == self.snapshot_lsn:
                return lsn
            self._wal.sync(lsn)
            staging = self._dir / f".snapshot-{lsn}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            galleries = []
            for i, (name, index) in enumerate(sorted(self._galleries.items())):
                graph, ids = staging / f"{i}.hnsw", staging / f"{i}.ids.npy"
                index.save(graph, ids)
                galleries.append(
                    {
                        "name": name,
                        "dim": index.dim,
                        "graph": graph.name,
                        "ids": ids.name,
                        "sha256": {p.name: sha256_of(p) for p in (graph, ids)},
                    }
                )
            manifest = staging / SNAPSHOT_MANIFEST
            manifest.write_text(json.dumps({"lsn": lsn, "galleries": galleries}, indent=1))
            for path in staging.iterdir():
                fsync_path(path)
            final = self._dir / f"{SNAPSHOT_PREFIX}{lsn:020d}"
            staging.rename(final)
            fsync_path(self._dir)
            self._wal.restart_after(lsn)
            for old in self._dir.glob(f"{SNAPSHOT_PREFIX}*"):
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
            self.snapshot_lsn = lsn
        return lsn

    def _maybe_snapshot(self) -> None:
        if self._snapshot_every and self.lsn - self.snapshot_lsn >= self._snapshot_every:
            self.snapshot()

    def _load_snapshot(self) -> int:
        snapshots = sorted(self._dir.glob(f"{SNAPSHOT_PREFIX}*"))
        if not snapshots:
            return 0
        folder = snapshots[-1]
        try:
            manifest = json.loads((folder / SNAPSHOT_MANIFEST).read_text())
            for entry in manifest["galleries"]:
                for file, digest in entry["sha256"].items():
                    if sha256_of(folder / file) != digest:
                        raise SnapshotDamaged(f"{folder / file} does not match its checksum")
                self._galleries[entry["name"]] = GalleryIndex.load(
                    int(entry["dim"]),
                    self._params,
                    folder / entry["graph"],
                    folder / entry["ids"],
                )
            return int(manifest["lsn"])
        except SnapshotDamaged:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            raise SnapshotDamaged(f"snapshot {folder} cannot be read: {e}") from e

    # -- replication ----------------------------------------------------------------------------

    def records_after(self, lsn: int) -> Iterator[WalRecord]:
        if lsn < self._wal.base_lsn:
            raise SnapshotNeeded(
                f"the log starts after lsn {self._wal.base_lsn}; records after {lsn} are only "
                "in the snapshot"
            )
        return self._wal.read_after(lsn)

    def subscribe(self, listener: Callable[[int], None]) -> Callable[[], None]:
        """Call listener(lsn) after each write; returns the function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self, lsn: int) -> None:
        for listener in list(self._listeners):
            listener(lsn)

    def close(self) -> None:
        with self._lock:
            self._wal.close()
