"""Shard records and vectors to and from their protobuf messages."""

from __future__ import annotations

import numpy as np

from facegrid.indexer.core import InvalidRequest
from facegrid.indexer.core.gallery import Ids, Vectors
from facegrid.indexer.core.wal import Op, WalRecord
from facegrid.v1 import index_pb2 as pb


def entries_to_arrays(entries: list[pb.IndexEntry]) -> tuple[Ids, Vectors]:
    sizes = {len(e.vector) for e in entries}
    if len(sizes) != 1 or 0 in sizes or sizes.pop() % 4:
        raise InvalidRequest("every vector must be the same, non-zero number of float32 values")
    ids = np.fromiter((e.id for e in entries), dtype=np.uint64, count=len(entries))
    vectors = np.frombuffer(b"".join(e.vector for e in entries), dtype="<f4")
    return ids, vectors.reshape(len(entries), -1).astype(np.float32)


def arrays_to_entries(ids: Ids, vectors: Vectors) -> list[pb.IndexEntry]:
    return [
        pb.IndexEntry(id=int(i), vector=v.astype("<f4").tobytes())
        for i, v in zip(ids, vectors, strict=True)
    ]


def record_to_wire(record: WalRecord) -> pb.WalRecord:
    if record.op is Op.ADD:
        assert record.vectors is not None
        add = pb.AddRequest(
            gallery=record.gallery,
            entries=arrays_to_entries(record.ids, record.vectors),
            upsert=record.upsert,
        )
        return pb.WalRecord(lsn=record.lsn, add=add)
    if record.op is Op.DELETE:
        delete = pb.DeleteRequest(gallery=record.gallery, ids=record.ids.tolist())
        return pb.WalRecord(lsn=record.lsn, delete=delete)
    if record.op is Op.CONFIGURE:
        m, ef_construction, ef_search = record.hnsw
        configure = pb.ConfigureGalleryRequest(
            gallery=record.gallery, m=m, ef_construction=ef_construction, ef_search=ef_search
        )
        return pb.WalRecord(lsn=record.lsn, configure_gallery=configure)
    return pb.WalRecord(lsn=record.lsn, drop_gallery=pb.DropGalleryRequest(gallery=record.gallery))


def record_from_wire(message: pb.WalRecord) -> WalRecord:
    kind = message.WhichOneof("op")
    if kind == "add":
        ids, vectors = entries_to_arrays(list(message.add.entries))
        return WalRecord(Op.ADD, message.add.gallery, ids, vectors, message.add.upsert, message.lsn)
    if kind == "delete":
        ids = np.array(message.delete.ids, dtype=np.uint64)
        return WalRecord(Op.DELETE, message.delete.gallery, ids, lsn=message.lsn)
    if kind == "drop_gallery":
        return WalRecord(Op.DROP, message.drop_gallery.gallery, lsn=message.lsn)
    if kind == "configure_gallery":
        c = message.configure_gallery
        return WalRecord(
            Op.CONFIGURE, c.gallery, lsn=message.lsn, hnsw=(c.m, c.ef_construction, c.ef_search)
        )
    raise InvalidRequest(f"record {message.lsn} has no operation")
