"""A follower tails its primary over gRPC on loopback: same records, same lsns, same bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from facegrid.indexer.core import Shard
from facegrid.indexer.replica import FOLLOWER, Follower, ReplicationState
from facegrid.v1 import index_pb2 as pb
from facegrid.v1 import index_pb2_grpc
from tests.conftest import serve_shard


@dataclass
class Node:
    shard: Shard
    state: ReplicationState
    stub: index_pb2_grpc.IndexShardStub
    address: str
    server: grpc.aio.Server
    channel: grpc.aio.Channel

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(None)
        await asyncio.to_thread(self.shard.close)


async def _serve(shard: Shard, state: ReplicationState) -> Node:
    server, address = await serve_shard(shard, state)
    channel = grpc.aio.insecure_channel(address)
    return Node(shard, state, index_pb2_grpc.IndexShardStub(channel), address, server, channel)


@pytest.fixture
async def primary(tmp_path: Path) -> AsyncIterator[Node]:
    node = await _serve(Shard("primary", tmp_path / "primary"), ReplicationState())
    yield node
    await node.close()


async def _start_follower(primary: Node, data: Path) -> tuple[Node, Follower, asyncio.Task[None]]:
    state = ReplicationState(FOLLOWER, primary.address)
    node = await _serve(Shard("follower", data), state)
    follower = Follower(node.shard, state, data, poll_seconds=0.05)
    return node, follower, asyncio.create_task(follower.run())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _caught_up(primary: Node, follower: Node) -> None:
    for _ in range(400):
        if follower.shard.lsn == primary.shard.lsn:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"follower at {follower.shard.lsn}, primary at {primary.shard.lsn}")


def _content(shard: Shard) -> dict[str, list[tuple[int, bytes]]]:
    content = {}
    for gallery in shard.stats().galleries:
        ids, _ = shard.list_ids(gallery.name, 0, 1_000_000)
        found, vectors = shard.get(gallery.name, ids)
        content[gallery.name] = [(int(i), v.tobytes()) for i, v in zip(found, vectors, strict=True)]
    return content


async def _write(stub: index_pb2_grpc.IndexShardStub, rng: np.random.Generator, start: int) -> None:
    for batch in range(10):
        entries = [
            pb.IndexEntry(
                id=start + batch * 10 + k, vector=rng.normal(size=8).astype("<f4").tobytes()
            )
            for k in range(10)
        ]
        await stub.Add(pb.AddRequest(gallery="g", entries=entries))
    await stub.Add(pb.AddRequest(gallery="h", entries=entries[:2]))
    await stub.Delete(pb.DeleteRequest(gallery="g", ids=[start, start + 11, start + 99]))


async def test_a_follower_ends_byte_for_byte_equal_and_refuses_writes(
    primary: Node, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    await _write(primary.stub, rng, 1)
    follower, _, task = await _start_follower(primary, tmp_path / "follower")
    await _write(primary.stub, rng, 1000)  # while it follows
    await primary.stub.DropGallery(pb.DropGalleryRequest(gallery="h"))
    await _caught_up(primary, follower)

    assert (tmp_path / "follower" / "wal.log").read_bytes() == (
        tmp_path / "primary" / "wal.log"
    ).read_bytes()
    assert _content(follower.shard) == _content(primary.shard)
    hits = await follower.stub.Search(
        pb.SearchRequest(
            gallery="g",
            vector=follower.shard.get("g", np.array([5], np.uint64))[1][0].tobytes(),
            top_n=1,
        )
    )
    assert hits.hits[0].id == 5  # followers serve reads

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await follower.stub.Add(
            pb.AddRequest(gallery="g", entries=[pb.IndexEntry(id=7, vector=bytes(32))])
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "follower" in (refused.value.details() or "")

    stats = await follower.stub.Stats(pb.StatsRequest())
    assert (stats.role, stats.primary, stats.replication_lag) == ("follower", primary.address, 0)
    await _stop(task)
    await follower.close()


async def test_lag_is_reported_and_promotion_takes_writes(primary: Node, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    follower, _, task = await _start_follower(primary, tmp_path / "follower")
    await _write(primary.stub, rng, 1)
    await _caught_up(primary, follower)
    await _stop(task)  # the follower stops hearing from its primary

    await _write(primary.stub, rng, 500)
    follower.state.observe(primary.shard.lsn, follower.shard.lsn)  # what its poll would learn
    stats = await follower.stub.Stats(pb.StatsRequest())
    assert stats.replication_lag == primary.shard.lsn - follower.shard.lsn > 0

    promoted = await follower.stub.Promote(pb.PromoteRequest())
    assert promoted.lsn == follower.shard.lsn
    added = await follower.stub.Add(
        pb.AddRequest(gallery="g", entries=[pb.IndexEntry(id=9999, vector=bytes(32))])
    )
    assert added.lsn == promoted.lsn + 1
    stats = await follower.stub.Stats(pb.StatsRequest())
    assert (stats.role, stats.replication_lag) == ("primary", 0)
    await follower.close()


async def test_a_new_follower_starts_from_the_primarys_snapshot(
    primary: Node, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    await _write(primary.stub, rng, 1)
    await primary.stub.Snapshot(pb.SnapshotRequest())  # the log no longer holds lsn 1
    await _write(primary.stub, rng, 2000)

    follower, replica, task = await _start_follower(primary, tmp_path / "follower")
    await _caught_up(primary, follower)
    assert replica.snapshots_installed == 1
    assert _content(follower.shard) == _content(primary.shard)
    assert not (tmp_path / "follower" / ".incoming-snapshot").exists()
    await _stop(task)
    await follower.close()

    # Restarted, it resumes from its own log and snapshot: no second transfer.
    await _write(primary.stub, rng, 3000)
    follower, replica, task = await _start_follower(primary, tmp_path / "follower")
    await _caught_up(primary, follower)
    assert replica.snapshots_installed == 0
    assert _content(follower.shard) == _content(primary.shard)
    await _stop(task)
    await follower.close()


async def test_a_follower_ahead_of_its_primary_starts_over(primary: Node, tmp_path: Path) -> None:
    """What a failover leaves behind: the old primary, rejoining, holds writes nobody else has."""
    rng = np.random.default_rng(4)
    await _write(primary.stub, rng, 1)
    stray = Shard("follower", tmp_path / "follower")
    for i in range(200):
        stray.add("stray", np.array([i + 1], np.uint64), np.ones((1, 8), np.float32))
    stray.close()

    follower, replica, task = await _start_follower(primary, tmp_path / "follower")
    await _caught_up(primary, follower)
    assert replica.snapshots_installed == 1
    assert _content(follower.shard) == _content(primary.shard)
    await _stop(task)
    await follower.close()
