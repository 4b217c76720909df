"""IndexShard over gRPC: converts wire messages to the shard's domain calls and back.

Shard calls run in a worker thread (they fsync and search); domain errors become gRPC statuses
here and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
import numpy as np

from facegrid.grpcserver import Context, StatusTable, abort_with
from facegrid.indexer.core import (
    DuplicateId,
    GalleryNotFound,
    IndexerError,
    InvalidRequest,
    Shard,
)
from facegrid.indexer.core.errors import NotPrimary, SnapshotNeeded
from facegrid.indexer.core.gallery import HnswParams, SearchResult
from facegrid.indexer.core.wal import WalRecord
from facegrid.indexer.replica import FOLLOWER, PRIMARY, ReplicationState
from facegrid.indexer.wire import arrays_to_entries, entries_to_arrays, record_to_wire
from facegrid.v1 import index_pb2 as pb
from facegrid.v1 import index_pb2_grpc

T = TypeVar("T")

SNAPSHOT_CHUNK = 1 << 20

_STATUS: StatusTable = [
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (GalleryNotFound, grpc.StatusCode.NOT_FOUND),
    (DuplicateId, grpc.StatusCode.ALREADY_EXISTS),
    (SnapshotNeeded, grpc.StatusCode.FAILED_PRECONDITION),
    (NotPrimary, grpc.StatusCode.FAILED_PRECONDITION),
]


class IndexShardServicer(index_pb2_grpc.IndexShardServicer):
    def __init__(
        self,
        shard: Shard,
        state: ReplicationState | None = None,
        *,
        max_batch: int = 10_000,
        on_promote: Callable[[], Awaitable[None]] | None = None,
        fast_index: Callable[[], bool] = lambda: True,
    ) -> None:
        """fast_index: whether the licence allows searching the HNSW graph (else: exact)."""
        self._shard = shard
        self._fast_index = fast_index
        self._state = state or ReplicationState()
        self._max_batch = max_batch
        self._on_promote = on_promote

    async def _call(self, context: Context, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except IndexerError as e:
            await abort_with(context, e, _STATUS)

    async def _write(self, context: Context, fn: Callable[[], T]) -> T:
        def guarded() -> T:
            if self._state.role != PRIMARY:
                raise NotPrimary(
                    f"shard {self._shard.name!r} is a follower of {self._state.primary}; "
                    "write to the primary"
                )
            return fn()

        return await self._call(context, guarded)

    async def Add(self, request: pb.AddRequest, context: Context) -> pb.AddResponse:
        def add() -> int:
            if len(request.entries) > self._max_batch:
                raise InvalidRequest(
                    f"{len(request.entries)} vectors in one call; at most {self._max_batch}"
                )
            if not request.entries:
                raise InvalidRequest("no vectors to add")
            ids, vectors = entries_to_arrays(list(request.entries))
            return self._shard.add(request.gallery, ids, vectors, upsert=request.upsert)

        lsn = await self._write(context, add)
        return pb.AddResponse(added=len(request.entries), lsn=lsn)

    async def Delete(self, request: pb.DeleteRequest, context: Context) -> pb.DeleteResponse:
        ids = np.array(request.ids, dtype=np.uint64)
        deleted, lsn = await self._write(context, lambda: self._shard.delete(request.gallery, ids))
        return pb.DeleteResponse(deleted=deleted, lsn=lsn)

    async def DropGallery(
        self, request: pb.DropGalleryRequest, context: Context
    ) -> pb.DropGalleryResponse:
        deleted, lsn = await self._write(context, lambda: self._shard.drop_gallery(request.gallery))
        return pb.DropGalleryResponse(deleted=deleted, lsn=lsn)

    async def ConfigureGallery(
        self, request: pb.ConfigureGalleryRequest, context: Context
    ) -> pb.ConfigureGalleryResponse:
        params = HnswParams(request.m, request.ef_construction, request.ef_search)
        lsn = await self._write(context, lambda: self._shard.configure(request.gallery, params))
        return pb.ConfigureGalleryResponse(lsn=lsn)

    async def Get(self, request: pb.GetRequest, context: Context) -> pb.GetResponse:
        ids = np.array(request.ids, dtype=np.uint64)
        found, vectors = await self._call(context, lambda: self._shard.get(request.gallery, ids))
        return pb.GetResponse(entries=arrays_to_entries(found, vectors))

    async def Search(self, request: pb.SearchRequest, context: Context) -> pb.SearchResponse:
        def search() -> SearchResult:
            if not request.vector or len(request.vector) % 4:
                raise InvalidRequest("the query must be a non-empty run of float32 values")
            vector = np.frombuffer(request.vector, dtype="<f4")
            return self._shard.search(
                request.gallery,
                vector,
                request.top_n or 1,
                request.max_distance,
                exact=request.linear_search or not self._fast_index(),
            )

        result = await self._call(context, search)
        return pb.SearchResponse(
            hits=[pb.SearchHit(id=i, distance=d) for i, d in result.hits],
            used_index=result.used_index,
        )

    async def List(self, request: pb.ListRequest, context: Context) -> pb.ListResponse:
        limit = request.limit or 1000
        ids, more = await self._call(
            context, lambda: self._shard.list_ids(request.gallery, request.after_id, limit)
        )
        return pb.ListResponse(ids=ids.tolist(), more=more)

    async def Stats(self, request: pb.StatsRequest, context: Context) -> pb.StatsResponse:
        stats = await self._call(context, self._shard.stats)
        return pb.StatsResponse(
            shard=stats.name,
            role=self._state.role,
            primary=self._state.primary if self._state.role == FOLLOWER else "",
            replication_lag=self._state.lag(stats.lsn),
            replication_lag_seconds=self._state.lag_seconds(stats.lsn),
            lsn=stats.lsn,
            galleries=[
                pb.GalleryStats(
                    name=g.name,
                    count=g.count,
                    dim=g.dim,
                    indexed=g.indexed,
                    unindexed=g.unindexed,
                    deleted=g.deleted,
                    m=g.params.m,
                    ef_construction=g.params.ef_construction,
                    ef_search=g.params.ef_search,
                )
                for g in stats.galleries
            ],
        )

    async def Snapshot(self, request: pb.SnapshotRequest, context: Context) -> pb.SnapshotResponse:
        lsn = await self._call(context, self._shard.snapshot)
        return pb.SnapshotResponse(lsn=lsn)

    async def FetchSnapshot(
        self, request: pb.FetchSnapshotRequest, context: Context
    ) -> AsyncIterator[pb.SnapshotChunk]:
        """The newest snapshot's files, the manifest last, in chunks of 1 MiB."""
        folder, lsn = await self._call(context, self._shard.pin_snapshot)
        try:
            files = sorted(folder.iterdir(), key=lambda p: (p.name == "manifest.json", p.name))
            for path in files:
                with path.open("rb") as f:
                    while True:
                        data = await asyncio.to_thread(f.read, SNAPSHOT_CHUNK)
                        yield pb.SnapshotChunk(lsn=lsn, file=path.name, data=data)
                        if len(data) < SNAPSHOT_CHUNK:
                            break
        finally:
            await asyncio.to_thread(self._shard.unpin, folder)

    async def Promote(self, request: pb.PromoteRequest, context: Context) -> pb.PromoteResponse:
        if self._state.role == FOLLOWER:
            self._state.role = PRIMARY
            if self._on_promote is not None:
                await self._on_promote()
        return pb.PromoteResponse(lsn=self._shard.lsn)

    def _records_after(self, lsn: int) -> list[WalRecord]:
        return list(self._shard.records_after(lsn))

    async def Replicate(
        self, request: pb.ReplicateRequest, context: Context
    ) -> AsyncIterator[pb.WalRecord]:
        """Every record after `after_lsn`, then each new one as it is written, until cancelled."""
        loop = asyncio.get_running_loop()
        written = asyncio.Event()

        def wake(_lsn: int) -> None:
            loop.call_soon_threadsafe(written.set)

        unsubscribe = self._shard.subscribe(wake)
        sent = request.after_lsn
        try:
            while True:
                written.clear()
                try:
                    records = await asyncio.to_thread(self._records_after, sent)
                except IndexerError as e:
                    await abort_with(context, e, _STATUS)
                for record in records:
                    yield record_to_wire(record)
                    sent = record.lsn
                if not records:
                    await written.wait()
        finally:
            unsubscribe()
