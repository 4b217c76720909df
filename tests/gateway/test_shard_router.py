"""The sharding client against real shard servers on loopback: routing, merging, failover."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from facegrid.gateway.core.errors import AlreadyExists, BadParam, NotFound, ServiceUnavailable
from facegrid.gateway.shards import (
    ChannelPool,
    ControlPlanePlacements,
    Route,
    ShardCopies,
    ShardRouter,
    StaticPlacements,
)
from facegrid.indexer.core import Shard
from facegrid.indexer.replica import FOLLOWER, Follower, ReplicationState
from facegrid.slots import SLOT_COUNT, slot_of
from tests.conftest import serve_shard


@dataclass
class Served:
    shard: Shard
    address: str
    server: grpc.aio.Server
    registry: CollectorRegistry

    def calls(self, method: str) -> float:
        return sum(
            sample.value
            for metric in self.registry.collect()
            for sample in metric.samples
            if sample.name == "facegrid_requests_total"
            and sample.labels["method"].endswith(f"/{method}")
        )

    def searches(self) -> float:
        return self.calls("Search")


async def _serve(shard: Shard, state: ReplicationState | None = None) -> Served:
    registry = CollectorRegistry()
    server, address = await serve_shard(shard, state, registry)
    return Served(shard, address, server, registry)


@pytest.fixture
async def shards(tmp_path: Path) -> AsyncIterator[list[Served]]:
    served = [await _serve(Shard(f"shard-{i}", tmp_path / str(i))) for i in range(3)]
    yield served
    for s in served:
        await s.server.stop(None)
        s.shard.close()


def _route(gallery: str, shards: list[ShardCopies]) -> Route:
    spread = tuple(i * len(shards) // SLOT_COUNT for i in range(SLOT_COUNT))
    return Route(gallery, 1, tuple(shards), spread)


@pytest.fixture
async def pool() -> AsyncIterator[ChannelPool]:
    channels = ChannelPool()
    yield channels
    await channels.close()


def _router(shards: list[Served], pool: ChannelPool, timeout: float = 5.0) -> ShardRouter:
    copies = [ShardCopies(s.shard.name, s.address) for s in shards]
    placements = StaticPlacements([_route("default", copies), _route("vip", copies)])
    return ShardRouter(placements, pool, timeout=timeout)


def _owner(face_id: int, shard_count: int = 3) -> int:
    return slot_of(face_id) * shard_count // SLOT_COUNT


def _vectors(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 32)).astype("<f4")


async def test_adds_land_on_the_slot_owner_in_every_gallery(
    shards: list[Served], pool: ChannelPool
) -> None:
    router = _router(shards, pool)
    vectors = _vectors(300)
    for face_id, vector in enumerate(vectors, start=1000):
        galleries = ["default", "vip"] if face_id % 3 == 0 else ["default"]
        await router.add(face_id, vector.tobytes(), galleries)

    owners = {s.shard.name: s for s in shards}
    for face_id in range(1000, 1300):
        owner = owners[f"shard-{_owner(face_id)}"]
        for s in shards:
            found, _ = s.shard.get("default", np.array([face_id], np.uint64))
            assert (len(found) == 1) == (s is owner), (face_id, s.shard.name)
        in_vip = len(owner.shard.get("vip", np.array([face_id], np.uint64))[0]) == 1
        assert in_vip == (face_id % 3 == 0)
    assert all(s.shard.stats().galleries for s in shards)  # every shard got some


async def test_many_faces_leave_in_one_request_per_shard_and_gallery(
    shards: list[Served], pool: ChannelPool
) -> None:
    router = _router(shards, pool)
    for face_id, vector in enumerate(_vectors(90, seed=4), start=1):
        await router.add(face_id, vector.tobytes(), ["default", "vip"])
    before = [s.calls("Delete") for s in shards]
    await router.delete_many(list(range(1, 61)), ["default", "vip"])
    assert [s.calls("Delete") - b for s, b in zip(shards, before, strict=True)] == [2, 2, 2]
    for s in shards:
        for gallery in ("default", "vip"):
            found, _ = s.shard.get(gallery, np.arange(1, 91, dtype=np.uint64))
            kept = set(found.tolist())
            assert kept and all(61 <= i <= 90 for i in kept), (s.shard.name, gallery)


async def test_search_merges_the_nearest_from_all_shards(
    shards: list[Served], pool: ChannelPool
) -> None:
    router = _router(shards, pool)
    vectors = _vectors(300, seed=2)
    for face_id, vector in enumerate(vectors, start=1):
        await router.add(face_id, vector.tobytes(), ["default"])
    for q in _vectors(10, seed=3):
        outcome = await router.search("default", q.tobytes(), 7)
        exact = np.argsort(np.linalg.norm(vectors - q, axis=1))[:7] + 1
        assert [i for i, _ in outcome.hits] == exact.tolist()
        assert (outcome.live, outcome.total) == (3, 3)


async def test_concurrent_adds_share_requests_and_a_bad_one_fails_alone(
    shards: list[Served], pool: ChannelPool
) -> None:
    router = _router(shards[:1], pool)
    vectors = _vectors(201, seed=8)
    await router.add(1, vectors[0].tobytes(), ["default"])
    outcomes = await asyncio.gather(
        *(router.add(i, vectors[i].tobytes(), ["default"]) for i in range(1, 201)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], AlreadyExists)  # id 1 was there already
    assert all(o is None for o in outcomes[1:])
    stored, _ = shards[0].shard.list_ids("default", 0, 1000)
    assert stored.tolist() == list(range(1, 201))
    assert shards[0].calls("Add") < 30  # 200 adds, one culprit found by bisection

    before = shards[0].calls("Add")
    more = _vectors(200, seed=9)
    await asyncio.gather(
        *(router.add(1000 + i, v.tobytes(), ["default"]) for i, v in enumerate(more))
    )
    assert shards[0].calls("Add") - before <= 3


async def test_a_failed_add_is_undone_in_the_other_galleries(
    shards: list[Served], pool: ChannelPool
) -> None:
    router = _router(shards, pool)
    await router.add(42, _vectors(1)[0].tobytes(), ["vip"])
    with pytest.raises(AlreadyExists):
        await router.add(42, _vectors(1, seed=9)[0].tobytes(), ["default", "vip"])
    assert await router.get("default", 42) is None  # not left half-written
    assert await router.get("vip", 42) == _vectors(1)[0].tobytes()

    # A shard refuses a vector of another size than its gallery's...
    await router.add(7, np.zeros(32, "<f4").tobytes(), ["default"])
    same_shard = next(i for i in range(8, 10_000) if _owner(i) == _owner(7))
    with pytest.raises(BadParam):
        await router.add(same_shard, np.zeros(16, "<f4").tobytes(), ["default"])
    # ...and a router that knows the model's size refuses it before any shard sees it.
    sized = ShardRouter(StaticPlacements([]), pool, dim=32)
    with pytest.raises(BadParam) as wrong:
        await sized.add(8, np.zeros(16, "<f4").tobytes(), ["default"])
    assert (wrong.value.param, wrong.value.value) == ("facen", 16)
    with pytest.raises(NotFound):
        await router.add(9, np.zeros(32, "<f4").tobytes(), ["nope"])


async def test_a_dead_shard_is_counted_out_or_fails_a_strict_search(
    shards: list[Served], pool: ChannelPool
) -> None:
    router = _router(shards, pool, timeout=2.0)
    for face_id, vector in enumerate(_vectors(60, seed=4), start=1):
        await router.add(face_id, vector.tobytes(), ["default"])
    await shards[1].server.stop(None)

    outcome = await router.search("default", _vectors(1, seed=5)[0].tobytes(), 100)
    assert (outcome.live, outcome.total) == (2, 3)
    dead = {i for i in range(1, 61) if _owner(i) == 1}
    assert dead and not dead & {i for i, _ in outcome.hits}
    assert len(outcome.hits) == 60 - len(dead)
    with pytest.raises(ServiceUnavailable, match="1 of 3"):
        await router.search("default", _vectors(1)[0].tobytes(), 5, strict=True)


async def test_a_shard_that_hangs_is_cut_off_at_the_deadline(
    shards: list[Served], pool: ChannelPool
) -> None:
    with socket.socket() as silent:  # accepts connections, never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        hung = ShardCopies("hung", f"127.0.0.1:{silent.getsockname()[1]}")
        copies = [ShardCopies(s.shard.name, s.address) for s in shards[:2]] + [hung]
        router = ShardRouter(StaticPlacements([_route("g", copies)]), pool, timeout=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await router.search("g", _vectors(1)[0].tobytes(), 5)
        assert loop.time() - started < 2.0
        assert (outcome.live, outcome.total) == (2, 3)


async def test_reads_spread_over_replicas_and_survive_the_primary(
    tmp_path: Path, pool: ChannelPool
) -> None:
    primary = await _serve(Shard("p", tmp_path / "p"))
    state = ReplicationState(FOLLOWER, primary.address)
    follower = await _serve(Shard("p", tmp_path / "f"), state)
    task = asyncio.create_task(Follower(follower.shard, state, tmp_path / "f").run())
    copies = ShardCopies("p", primary.address, (follower.address,))
    router = ShardRouter(StaticPlacements([_route("g", [copies])]), pool, timeout=2.0)
    vectors = _vectors(50, seed=6)
    for face_id, vector in enumerate(vectors, start=1):
        await router.add(face_id, vector.tobytes(), ["g"])
    for _ in range(200):
        if follower.shard.lsn == primary.shard.lsn:
            break
        await asyncio.sleep(0.02)

    results = [await router.search("g", vectors[3].tobytes(), 1) for _ in range(4)]
    assert all(r.hits[0][0] == 4 for r in results)
    assert (primary.searches(), follower.searches()) == (2, 2)  # reads take turns

    await primary.server.stop(None)
    outcome = await router.search("g", vectors[10].tobytes(), 1, strict=True)
    assert outcome.hits[0][0] == 11
    assert (outcome.live, outcome.total) == (1, 1)
    with pytest.raises(ServiceUnavailable):
        await router.add(99, vectors[0].tobytes(), ["g"])  # writes need the primary

    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await follower.server.stop(None)
    follower.shard.close()
    primary.shard.close()


async def test_placements_come_from_the_control_plane(controlplane_address: str) -> None:
    async with grpc.aio.insecure_channel(controlplane_address) as channel:
        placements = ControlPlanePlacements(channel, timeout=5)
        route = await placements.route("default")
        assert len(route.slot_shards) == SLOT_COUNT
        assert route.shards[0].name == "shard-0"
        router = ShardRouter(placements, ChannelPool(), timeout=5)
        await router.add(5, np.ones(8, "<f4").tobytes(), ["default"])
        outcome = await router.search("default", np.ones(8, "<f4").tobytes(), 1)
        assert outcome.hits == [(5, 0.0)]
        with pytest.raises(NotFound):
            await placements.route("missing")
