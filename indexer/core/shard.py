"""A shard: its galleries, rebuilt from the write-ahead log on start.

Writes are validated completely, then logged and applied under the write lock, then made
durable (fsync) outside it, so concurrent writers share fsyncs (group commit). A write that fails
validation changes nothing; a write is acknowledged only after its fsync, so it survives a
crash. A reader may see a write a moment before it is durable.

Searches share a read lock. A builder thread moves newly added vectors into each gallery's HNSW
graph in small steps under the write lock (a search waits for one step at most) and rebuilds
graphs with many deleted places, copying under the read lock.

A follower shard applies its primary's records with the primary's lsns (`apply_replicated`), so
both logs hold the same records in the same order.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from facegrid.files import fsync_path, sha256_of
from facegrid.indexer.core.errors import (
    DimensionMismatch,
    DuplicateId,
    GalleryNotFound,
    InvalidRequest,
    ReplicationGap,
    SnapshotDamaged,
    SnapshotNeeded,
)
from facegrid.indexer.core.gallery import (
    BUILD_THREADS,
    GalleryIndex,
    HnswParams,
    Ids,
    SearchResult,
    Vectors,
)
from facegrid.indexer.core.ids import IdSet
from facegrid.indexer.core.rwlock import ReadWriteLock
from facegrid.indexer.core.wal import Op, WalRecord, WriteAheadLog

MAX_GALLERY_NAME = 48
# Vectors the builder moves into a graph per step: a search waits for one step at most.
BUILD_STEP = 64
COMPACTION_CHUNK = 4096
SNAPSHOT_PREFIX = "snapshot-"
SNAPSHOT_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class GalleryStats:
    name: str
    count: int
    dim: int
    # Live vectors in the HNSW graph, live vectors searched exactly until the builder moves
    # them, and places in the graph marked deleted and not yet reclaimed.
    indexed: int = 0
    unindexed: int = 0
    deleted: int = 0
    params: HnswParams = field(default_factory=HnswParams)


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
        build: bool = True,
    ) -> None:
        """Recover: load the newest snapshot (checked), then replay the log after it.

        snapshot_every: take a snapshot once this many records are logged after the last one
        (0: only when asked). build: run the graph builder thread (off only in tests that
        step it by hand).
        """
        self.name = name
        self._dir = data_dir
        self._params = params or HnswParams()
        self._galleries: dict[str, GalleryIndex] = {}
        # Galleries given their own HNSW parameters (by the control plane); others use _params.
        self._configured: dict[str, HnswParams] = {}
        self._lock = ReadWriteLock()
        # Snapshot folders being streamed to followers, with how many streams read each.
        self._pinned: dict[Path, int] = {}
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
        self._closing = threading.Event()
        self._work = threading.Event()
        self._builder: threading.Thread | None = None
        if build:
            self._builder = threading.Thread(
                target=self._build_loop, name=f"builder-{name}", daemon=True
            )
            self._builder.start()

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
        with self._lock.write():
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
        self._work.set()
        self._maybe_snapshot()
        return record.lsn

    def delete(self, gallery: str, ids: Ids) -> tuple[int, int]:
        """Delete ids (absent ones are ignored); returns (deleted, lsn)."""
        _check_gallery(gallery)
        ids = np.asarray(ids, dtype=np.uint64)
        with self._lock.write():
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
        with self._lock.write():
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

    def apply_replicated(self, record: WalRecord) -> None:
        """Log and apply a record streamed from the primary, keeping its lsn."""
        with self._lock.write():
            if record.lsn != self.lsn + 1:
                raise ReplicationGap(f"record {record.lsn} does not follow {self.lsn}")
            self._wal.write(record, keep_lsn=True)
            self._apply(record)
        self._wal.sync(record.lsn)
        self._notify(record.lsn)
        self._work.set()
        self._maybe_snapshot()

    def _apply(self, record: WalRecord) -> None:
        if record.op is Op.ADD:
            assert record.vectors is not None
            index = self._galleries.get(record.gallery)
            if index is None:
                index = self._galleries[record.gallery] = GalleryIndex(
                    record.vectors.shape[1], self.params_of(record.gallery)
                )
            index.add(record.ids, record.vectors)
        elif record.op is Op.DELETE:
            if record.gallery in self._galleries:
                self._galleries[record.gallery].delete(record.ids)
        elif record.op is Op.DROP:
            self._galleries.pop(record.gallery, None)
            self._configured.pop(record.gallery, None)
        elif record.op is Op.CONFIGURE:
            m, ef_construction, ef_search = record.hnsw
            params = replace(
                self._params, m=m, ef_construction=ef_construction, ef_search=ef_search
            )
            self._configured[record.gallery] = params
            if record.gallery in self._galleries:
                self._galleries[record.gallery].configure(params)

    def params_of(self, gallery: str) -> HnswParams:
        return self._configured.get(gallery, self._params)

    def configure(self, gallery: str, params: HnswParams) -> int:
        """Give a gallery its own HNSW parameters (logged, so they survive restarts and reach
        followers); returns the lsn, unchanged when the gallery already has them."""
        _check_gallery(gallery)
        if not (2 <= params.m <= 128 and params.ef_construction >= 8 and params.ef_search >= 1):
            raise InvalidRequest(
                f"HNSW parameters out of range: m 2..128, ef_construction >= 8, ef_search >= 1; "
                f"got {params}"
            )
        params = replace(
            self._params,
            m=params.m,
            ef_construction=params.ef_construction,
            ef_search=params.ef_search,
        )
        with self._lock.write():
            if self.params_of(gallery) == params and gallery in self._configured:
                return self.lsn
            record = self._wal.write(
                WalRecord(
                    Op.CONFIGURE,
                    gallery,
                    hnsw=(params.m, params.ef_construction, params.ef_search),
                )
            )
            self._apply(record)
        self._wal.sync(record.lsn)
        self._notify(record.lsn)
        return record.lsn

    # -- reads ----------------------------------------------------------------------------------

    def _gallery(self, gallery: str) -> GalleryIndex:
        index = self._galleries.get(gallery)
        if index is None:
            raise GalleryNotFound(f"gallery {gallery!r} has no vectors on shard {self.name!r}")
        return index

    def get(self, gallery: str, ids: Ids) -> tuple[Ids, Vectors]:
        with self._lock.read():
            index = self._galleries.get(gallery)
            if index is None:
                return np.empty(0, np.uint64), np.empty((0, 0), np.float32)
            return index.get(np.asarray(ids, dtype=np.uint64))

    def search(
        self,
        gallery: str,
        vector: Vectors,
        top_n: int,
        max_distance: float = 0.0,
        *,
        exact: bool = False,
    ) -> SearchResult:
        """The top_n nearest ids with their Euclidean distances; an unknown gallery has none.

        exact: compare with every vector instead of walking the graph (the seed's
        `linear_search=1`).
        """
        if top_n <= 0:
            raise InvalidRequest("top_n must be positive")
        vector = np.asarray(vector, dtype=np.float32)
        if not np.isfinite(vector).all():
            raise InvalidRequest("query contains NaN or infinity")
        with self._lock.read():
            index = self._galleries.get(gallery)
            if index is None:
                return SearchResult([], False)
            return index.search(vector, top_n, max_distance, exact=exact)

    def list_ids(self, gallery: str, after_id: int, limit: int) -> tuple[Ids, bool]:
        if limit <= 0:
            raise InvalidRequest("limit must be positive")
        with self._lock.write():  # builds the sorted id cache on first use
            return self._gallery(gallery).list_ids(after_id, limit)

    def spaces(self, gallery: str, ids: Ids) -> list[str]:
        """For each id, "indexed" when it is in the graph, "linear" when searched exactly."""
        with self._lock.read():
            index = self._gallery(gallery)
            return [index.space_of(i) for i in ids.tolist()]

    def has_graph(self, gallery: str) -> bool:
        with self._lock.read():
            return self._gallery(gallery).has_graph

    def stats(self) -> ShardStats:
        with self._lock.read():
            galleries = [
                GalleryStats(
                    name,
                    len(index),
                    index.dim,
                    index.indexed,
                    index.unindexed,
                    index.deleted,
                    index.params,
                )
                for name, index in sorted(self._galleries.items())
            ]
            return ShardStats(self.name, self.lsn, galleries)

    # -- the graph builder ----------------------------------------------------------------------

    def build_step(self) -> bool:
        """Do one step of background work (move vectors into a graph, or compact one);
        returns False when there is nothing to do."""
        with self._lock.write():
            work = [
                (name, index)
                for name, index in self._galleries.items()
                if index.pending() or index.needs_compaction()
            ]
            if not work:
                return False
            _, index = work[0]
            if not index.needs_compaction():
                index.build_step(BUILD_STEP)
                return True
            ids = index.begin_compaction()
        self._compact(index, ids)
        return True

    def _compact(self, index: GalleryIndex, ids: Ids) -> None:
        graph = index.new_graph_for_compaction(len(ids))
        copied = IdSet()
        for start in range(0, len(ids), COMPACTION_CHUNK):
            with self._lock.read():
                labels, vectors = index.copy_for_compaction(ids[start : start + COMPACTION_CHUNK])
            if len(labels):
                graph.add_items(vectors, labels, num_threads=BUILD_THREADS)
                copied.update(labels)
        with self._lock.write():
            index.finish_compaction(graph, copied)

    def wait_indexed(self, timeout: float = 60.0) -> None:
        """Block until the builder has nothing left to do (benchmarks and tests)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock.read():
                busy = any(index.busy() for index in self._galleries.values())
            if not busy:
                return
            if self._builder is None:
                self.build_step()
            elif time.monotonic() > deadline:
                raise TimeoutError(f"shard {self.name!r} still building after {timeout} s")
            else:
                time.sleep(0.01)

    def _build_loop(self) -> None:
        while not self._closing.is_set():
            if not self.build_step():
                self._work.wait(timeout=1.0)
                self._work.clear()

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self, *, force: bool = False) -> int:
        """Write every gallery to a new snapshot, then restart the log after it; returns its lsn.

        Nothing to do when no record came after the newest snapshot, unless force is set and
        that snapshot has no folder (a shard that never took one).

        Files go to a temporary folder, are fsynced, listed with their sha256 in a manifest and
        renamed into place as a whole; only then is the log emptied and the older snapshot
        removed. A crash at any point leaves a recoverable pair of snapshot and log.
        """
        with self._lock.write():
            lsn = self._wal.last_lsn
            if lsn == self.snapshot_lsn and (not force or self._snapshot_folder().exists()):
                return lsn
            self._wal.sync(lsn)
            staging = self._dir / f".snapshot-{lsn}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            galleries = []
            for i, (name, index) in enumerate(sorted(self._galleries.items())):
                files = index.save(staging, str(i))
                galleries.append(
                    {
                        "name": name,
                        "dim": index.dim,
                        "stem": str(i),
                        "sha256": {p.name: sha256_of(p) for p in files},
                    }
                )
            configured = {
                name: [p.m, p.ef_construction, p.ef_search]
                for name, p in sorted(self._configured.items())
            }
            manifest = staging / SNAPSHOT_MANIFEST
            manifest.write_text(
                json.dumps({"lsn": lsn, "galleries": galleries, "configured": configured}, indent=1)
            )
            for path in staging.iterdir():
                fsync_path(path)
            final = self._dir / f"{SNAPSHOT_PREFIX}{lsn:020d}"
            staging.rename(final)
            fsync_path(self._dir)
            self._wal.restart_after(lsn)
            self._remove_old_snapshots(final)
            self.snapshot_lsn = lsn
        return lsn

    def pin_snapshot(self) -> tuple[Path, int]:
        """The newest snapshot's folder and lsn, kept on disk until `unpin` (a snapshot is taken
        first if the log has records after the newest one, or there is none)."""
        self.snapshot(force=True)
        with self._lock.write():
            folder, lsn = self._snapshot_folder(), self.snapshot_lsn
            self._pinned[folder] = self._pinned.get(folder, 0) + 1
        return folder, lsn

    def unpin(self, folder: Path) -> None:
        with self._lock.write():
            self._pinned[folder] -= 1
            if not self._pinned[folder]:
                del self._pinned[folder]
                if folder != self._snapshot_folder():
                    shutil.rmtree(folder, ignore_errors=True)

    def install_snapshot(self, folder: Path) -> int:
        """Replace everything this shard holds by a snapshot fetched from the primary.

        The snapshot is checked and loaded before anything changes; then it becomes this
        shard's snapshot and the log restarts after it. Returns its lsn.
        """
        lsn, galleries, configured = self._read_snapshot(folder)
        with self._lock.write():
            final = self._dir / f"{SNAPSHOT_PREFIX}{lsn:020d}"
            if final != folder:
                shutil.rmtree(final, ignore_errors=True)
                folder.rename(final)
                fsync_path(self._dir)
            self._galleries = galleries
            self._configured = configured
            self._wal.restart_after(lsn)
            self.snapshot_lsn = lsn
            self._remove_old_snapshots(final)
        self._work.set()
        return lsn

    def _snapshot_folder(self) -> Path:
        return self._dir / f"{SNAPSHOT_PREFIX}{self.snapshot_lsn:020d}"

    def _remove_old_snapshots(self, keep: Path) -> None:
        for old in self._dir.glob(f"{SNAPSHOT_PREFIX}*"):
            if old != keep and old not in self._pinned:
                shutil.rmtree(old, ignore_errors=True)

    def _maybe_snapshot(self) -> None:
        if self._snapshot_every and self.lsn - self.snapshot_lsn >= self._snapshot_every:
            self.snapshot()

    def _load_snapshot(self) -> int:
        snapshots = sorted(self._dir.glob(f"{SNAPSHOT_PREFIX}*"))
        if not snapshots:
            return 0
        lsn, self._galleries, self._configured = self._read_snapshot(snapshots[-1])
        return lsn

    def _read_snapshot(
        self, folder: Path
    ) -> tuple[int, dict[str, GalleryIndex], dict[str, HnswParams]]:
        galleries = {}
        try:
            manifest = json.loads((folder / SNAPSHOT_MANIFEST).read_text())
            configured = {
                name: replace(self._params, m=int(m), ef_construction=int(efc), ef_search=int(efs))
                for name, (m, efc, efs) in manifest.get("configured", {}).items()
            }
            for entry in manifest["galleries"]:
                for file, digest in entry["sha256"].items():
                    if sha256_of(folder / file) != digest:
                        raise SnapshotDamaged(f"{folder / file} does not match its checksum")
                galleries[entry["name"]] = GalleryIndex.load(
                    int(entry["dim"]),
                    configured.get(entry["name"], self._params),
                    folder,
                    entry["stem"],
                )
            return int(manifest["lsn"]), galleries, configured
        except SnapshotDamaged:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            raise SnapshotDamaged(f"snapshot {folder} cannot be read: {e}") from e

    # -- replication ----------------------------------------------------------------------------

    def records_after(self, lsn: int) -> Iterator[WalRecord]:
        """Durable records after lsn, for a follower. Records not yet fsynced are held back, so
        a follower never has a write its primary could still lose."""
        if lsn < self._wal.base_lsn:
            raise SnapshotNeeded(
                f"the log starts after lsn {self._wal.base_lsn}; records after {lsn} are only "
                "in the snapshot"
            )
        durable = self._wal.synced_lsn
        return (record for record in self._wal.read_after(lsn) if record.lsn <= durable)

    def subscribe(self, listener: Callable[[int], None]) -> Callable[[], None]:
        """Call listener(lsn) after each write; returns the function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self, lsn: int) -> None:
        for listener in list(self._listeners):
            listener(lsn)

    def close(self) -> None:
        self._closing.set()
        self._work.set()
        if self._builder is not None:
            self._builder.join()
        with self._lock.write():
            self._wal.close()
