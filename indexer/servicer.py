"""IndexShard over gRPC: converts wire messages to the shard's domain calls and back.

Shard calls run in a worker thread (they fsync and search); domain errors become gRPC statuses
here and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
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
from facegrid.indexer.core.errors import SnapshotNeeded
from facegrid.indexer.core.wal import Op, WalRecord
from facegrid.v1 import index_pb2 as pb
from facegrid.v1 import index_pb2_grpc

T = TypeVar("T")

_STATUS: StatusTable = [
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (GalleryNotFound, grpc.StatusCode.NOT_FOUND),
    (DuplicateId, grpc.StatusCode.ALREADY_EXISTS),
    (SnapshotNeeded, grpc.StatusCode.FAILED_PRECONDITION),
]


def _vectors(entries: list[pb.IndexEntry]) -> tuple[np.ndarray, np.ndarray]:
    sizes = {len(e.vector) for e in entries}
    if len(sizes) != 1 or 0 in sizes or sizes.pop() % 4:
        raise InvalidRequest("every vector must be the same, non-zero number of float32 values")
    ids = np.fromiter((e.id for e in entries), dtype=np.uint64, count=len(entries))
    vectors = np.frombuffer(b"".join(e.vector for e in entries), dtype="<f4")
    return ids, vectors.reshape(len(entries), -1)


def _wire_record(record: WalRecord) -> pb.WalRecord:
    if record.op is Op.ADD:
        assert record.vectors is not None
        entries = [
            pb.IndexEntry(id=int(i), vector=v.astype("<f4").tobytes())
            for i, v in zip(record.ids, record.vectors, strict=True)
        ]
        add = pb.AddRequest(gallery=record.gallery, entries=entries, upsert=record.upsert)
        return pb.WalRecord(lsn=record.lsn, add=add)
    if record.op is Op.DELETE:
        delete = pb.DeleteRequest(gallery=record.gallery, ids=record.ids.tolist())
        return pb.WalRecord(lsn=record.lsn, delete=delete)
    return pb.WalRecord(lsn=record.lsn, drop_gallery=pb.DropGalleryRequest(gallery=record.gallery))


class IndexShardServicer(index_pb2_grpc.IndexShardServicer):
    def __init__(self, shard: Shard, role: str = "primary") -> None:
        self._shard = shard
        self._role = role

    async def _call(self, context: Context, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except IndexerError as e:
            await abort_with(context, e, _STATUS)

    async def Add(self, request: pb.AddRequest, context: Context) -> pb.AddResponse:
        def add() -> int:
            ids, vectors = _vectors(list(request.entries))
            return self._shard.add(request.gallery, ids, vectors, upsert=request.upsert)

        lsn = await self._call(context, add)
        return pb.AddResponse(added=len(request.entries), lsn=lsn)

    async def Delete(self, request: pb.DeleteRequest, context: Context) -> pb.DeleteResponse:
        ids = np.array(request.ids, dtype=np.uint64)
        deleted, lsn = await self._call(context, lambda: self._shard.delete(request.gallery, ids))
        return pb.DeleteResponse(deleted=deleted, lsn=lsn)

    async def DropGallery(
        self, request: pb.DropGalleryRequest, context: Context
    ) -> pb.DropGalleryResponse:
        deleted, lsn = await self._call(context, lambda: self._shard.drop_gallery(request.gallery))
        return pb.DropGalleryResponse(deleted=deleted, lsn=lsn)

    async def Get(self, request: pb.GetRequest, context: Context) -> pb.GetResponse:
        ids = np.array(request.ids, dtype=np.uint64)
        found, vectors = await self._call(context, lambda: self._shard.get(request.gallery, ids))
        return pb.GetResponse(
            entries=[
                pb.IndexEntry(id=int(i), vector=v.astype("<f4").tobytes())
                for i, v in zip(found, vectors, strict=True)
            ]
        )

    async def Search(self, request: pb.SearchRequest, context: Context) -> pb.SearchResponse:
        def search() -> list[tuple[int, float]]:
            if not request.vector or len(request.vector) % 4:
                raise InvalidRequest("the query must be a non-empty run of float32 values")
            vector = np.frombuffer(request.vector, dtype="<f4")
            return self._shard.search(
                request.gallery, vector, request.top_n or 1, request.max_distance
            )

        hits = await self._call(context, search)
        return pb.SearchResponse(hits=[pb.SearchHit(id=i, distance=d) for i, d in hits])

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
            role=self._role,
            lsn=stats.lsn,
            galleries=[
                pb.GalleryStats(name=g.name, count=g.count, dim=g.dim) for g in stats.galleries
            ],
        )

    async def Snapshot(self, request: pb.SnapshotRequest, context: Context) -> pb.SnapshotResponse:
        lsn = await self._call(context, self._shard.snapshot)
        return pb.SnapshotResponse(lsn=lsn)

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
                    yield _wire_record(record)
                    sent = record.lsn
                if not records:
                    await written.wait()
        finally:
            unsubscribe()
