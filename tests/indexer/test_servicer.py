"""IndexShard over gRPC on loopback: given vectors in, nearest ids out, errors as statuses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from facegrid.indexer import main as indexer_main
from facegrid.indexer.settings import IndexerSettings
from facegrid.v1 import index_pb2 as pb
from facegrid.v1 import index_pb2_grpc


def _entry(face_id: int, vector: np.ndarray) -> pb.IndexEntry:
    return pb.IndexEntry(id=face_id, vector=vector.astype("<f4").tobytes())


async def test_add_then_search_over_grpc(
    shard_stub: index_pb2_grpc.IndexShardStub, rng: np.random.Generator
) -> None:
    vectors = rng.normal(size=(64, 128)).astype(np.float32)
    added = await shard_stub.Add(
        pb.AddRequest(gallery="g", entries=[_entry(100 + i, v) for i, v in enumerate(vectors)])
    )
    assert added.added == 64 and added.lsn == 1

    result = await shard_stub.Search(
        pb.SearchRequest(gallery="g", vector=vectors[9].tobytes(), top_n=2)
    )
    assert result.hits[0].id == 109
    assert result.hits[0].distance == pytest.approx(0.0, abs=1e-3)

    got = await shard_stub.Get(pb.GetRequest(gallery="g", ids=[109, 5]))
    assert [e.id for e in got.entries] == [109]
    np.testing.assert_allclose(np.frombuffer(got.entries[0].vector, "<f4"), vectors[9])

    listed = await shard_stub.List(pb.ListRequest(gallery="g", after_id=150, limit=100))
    assert list(listed.ids) == list(range(151, 164)) and not listed.more

    stats = await shard_stub.Stats(pb.StatsRequest())
    assert (stats.shard, stats.role, stats.lsn) == ("shard-test", "primary", 1)
    assert [(g.name, g.count, g.dim) for g in stats.galleries] == [("g", 64, 128)]


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (
            pb.AddRequest(gallery="g", entries=[pb.IndexEntry(id=1, vector=b"abc")]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.AddRequest(gallery="", entries=[_entry(1, np.zeros(4))]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.AddRequest(gallery="g", entries=[_entry(1, np.zeros(4)), _entry(2, np.zeros(8))]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.AddRequest(gallery="g", entries=[_entry(7, np.zeros(4))]),
            grpc.StatusCode.ALREADY_EXISTS,
        ),
        (
            pb.AddRequest(gallery="g", entries=[_entry(8, np.zeros(5))]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (  # NaN and infinity
            pb.AddRequest(gallery="g", entries=[_entry(9, np.array([0, np.nan, 0, 0]))]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.AddRequest(gallery="g", entries=[_entry(9, np.array([0, np.inf, 0, 0]))]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (pb.AddRequest(gallery="g"), grpc.StatusCode.INVALID_ARGUMENT),  # nothing to add
        (  # over the batch limit (max_batch: 10,000)
            pb.AddRequest(
                gallery="g", entries=[_entry(100 + i, np.zeros(4)) for i in range(10_001)]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.AddRequest(gallery="", entries=[_entry(9, np.zeros(4))]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_bad_writes_map_to_statuses_and_change_nothing(
    shard_stub: index_pb2_grpc.IndexShardStub, request_: pb.AddRequest, code: grpc.StatusCode
) -> None:
    await shard_stub.Add(pb.AddRequest(gallery="g", entries=[_entry(7, np.ones(4))]))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await shard_stub.Add(request_)
    assert raised.value.code() == code
    assert raised.value.details()
    stats = await shard_stub.Stats(pb.StatsRequest())
    assert stats.lsn == 1 and stats.galleries[0].count == 1


async def test_search_errors(shard_stub: index_pb2_grpc.IndexShardStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await shard_stub.Search(pb.SearchRequest(gallery="g", vector=b""))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await shard_stub.List(pb.ListRequest(gallery="missing"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    empty = await shard_stub.Search(
        pb.SearchRequest(gallery="missing", vector=np.zeros(4, "<f4").tobytes(), top_n=3)
    )
    assert list(empty.hits) == []


async def test_replicate_streams_history_then_follows_new_writes(
    shard_stub: index_pb2_grpc.IndexShardStub,
) -> None:
    await shard_stub.Add(pb.AddRequest(gallery="g", entries=[_entry(1, np.ones(4))]))
    await shard_stub.Add(pb.AddRequest(gallery="g", entries=[_entry(2, np.ones(4))]))
    stream = shard_stub.Replicate(pb.ReplicateRequest(after_lsn=1))
    first = await asyncio.wait_for(stream.read(), 5)
    assert first.lsn == 2 and first.add.entries[0].id == 2

    await shard_stub.Delete(pb.DeleteRequest(gallery="g", ids=[1]))
    second = await asyncio.wait_for(stream.read(), 5)
    assert second.lsn == 3 and list(second.delete.ids) == [1]

    await shard_stub.DropGallery(pb.DropGalleryRequest(gallery="g"))
    third = await asyncio.wait_for(stream.read(), 5)
    assert third.WhichOneof("op") == "drop_gallery"
    stream.cancel()


async def test_snapshot_over_grpc_and_replication_from_before_it(
    shard_stub: index_pb2_grpc.IndexShardStub,
) -> None:
    await shard_stub.Add(pb.AddRequest(gallery="g", entries=[_entry(1, np.ones(4))]))
    await shard_stub.Add(pb.AddRequest(gallery="g", entries=[_entry(2, np.ones(4))]))
    assert (await shard_stub.Snapshot(pb.SnapshotRequest())).lsn == 2
    await shard_stub.Add(pb.AddRequest(gallery="g", entries=[_entry(3, np.ones(4))]))
    stream = shard_stub.Replicate(pb.ReplicateRequest(after_lsn=2))
    record = await asyncio.wait_for(stream.read(), 5)
    assert record.lsn == 3
    stream.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await asyncio.wait_for(shard_stub.Replicate(pb.ReplicateRequest(after_lsn=0)).read(), 5)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_shard_metrics_describe_its_galleries_and_log(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    settings = IndexerSettings(
        listen="127.0.0.1:1", metrics_listen=None, data_dir=tmp_path, shard_name="s1"
    )
    shard, _ = indexer_main.build(settings, registry)
    shard.add("g", np.array([1, 2, 3], np.uint64), np.ones((3, 4), np.float32))
    shard.add("h", np.array([9], np.uint64), np.ones((1, 4), np.float32))
    shard.snapshot()
    shard.add("g", np.array([4], np.uint64), np.ones((1, 4), np.float32))
    value = registry.get_sample_value
    assert value("facegrid_indexer_vectors", {"shard": "s1", "gallery": "g"}) == 4
    assert value("facegrid_indexer_vectors", {"shard": "s1", "gallery": "h"}) == 1
    assert value("facegrid_indexer_lsn", {"shard": "s1"}) == 3
    assert value("facegrid_indexer_snapshot_lsn", {"shard": "s1"}) == 2
    assert (value("facegrid_indexer_wal_bytes", {"shard": "s1"}) or 0) > 16
    assert value("facegrid_indexer_unindexed_vectors", {"shard": "s1", "gallery": "g"}) == 4
    assert value("facegrid_indexer_indexed_vectors", {"shard": "s1", "gallery": "g"}) == 0
    assert value("facegrid_indexer_deleted_vectors", {"shard": "s1", "gallery": "g"}) == 0
    assert value("facegrid_indexer_replication_lag_records", {"shard": "s1"}) == 0
    assert value("facegrid_indexer_replication_lag_seconds", {"shard": "s1"}) == 0
    shard.close()
