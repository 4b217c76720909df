"""Online resharding against real index shards, while the gateway's router keeps writing.

Three real shards on loopback. A gallery on one shard grows to three (and later shrinks to two)
through the operator's stages (dual write, copy, verify, cut over, clean up) while a writer adds
and deletes faces through the gateway's ShardRouter, as the REST API would. Afterwards every
acknowledged face is on exactly the shard its slot names, and nothing deleted came back.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from facegrid import grpcserver
from facegrid.gateway.shards import ChannelPool, Route, ShardCopies, ShardRouter
from facegrid.indexer import main as indexer_main
from facegrid.indexer.settings import IndexerSettings
from facegrid.operator.core.placement import SLOT_COUNT, Placement, ShardRef, rebalance, slot_of
from facegrid.operator.reshard import SlotMover, moves
from tests.conftest import free_port

GALLERY = "g"
DIM = 128


class MovingPlacements:
    """The placements a gateway would hold: replaced as the control plane publishes them."""

    def __init__(self) -> None:
        self.current: Route | None = None

    def publish(self, p: Placement) -> None:
        self.current = Route(
            p.gallery,
            p.version,
            tuple(ShardCopies(s.name, s.address) for s in p.shards),
            p.slot_shards,
            p.target,
        )

    async def route(self, gallery: str) -> Route:
        assert self.current is not None
        return self.current


@pytest.fixture
async def shards(tmp_path: Path) -> AsyncIterator[list[ShardRef]]:
    servers = []
    refs = []
    for i in range(3):
        settings = IndexerSettings(
            listen=f"127.0.0.1:{free_port()}", data_dir=tmp_path / f"shard-{i}", metrics_listen=None
        )
        shard, service = indexer_main.build(settings, CollectorRegistry())
        server, _, port = await grpcserver.start(service)
        servers.append((server, shard))
        refs.append(ShardRef(f"indexer-{i}", f"127.0.0.1:{port}"))
    yield refs
    for server, shard in servers:
        await server.stop(None)
        shard.close()


def vector(face_id: int) -> bytes:
    rng = np.random.default_rng(face_id)
    v = rng.standard_normal(DIM).astype("<f4")
    return (v / np.linalg.norm(v)).tobytes()


def placement(
    version: int, shards: list[ShardRef], owners: tuple[str, ...], target: tuple[str, ...] = ()
) -> Placement:
    names = [s.name for s in shards]
    return Placement(
        GALLERY,
        version,
        tuple(shards),
        tuple(names.index(o) for o in owners),
        tuple(names.index(o) for o in target),
    )


async def reshard(
    mover: SlotMover,
    published: MovingPlacements,
    version: int,
    shards: list[ShardRef],
    owners: tuple[str, ...],
    onto: list[str],
) -> tuple[int, tuple[str, ...], list[tuple[int, int]]]:
    """The operator's stages, publishing each placement as it would."""
    target = rebalance(owners, onto)
    dual = placement(version + 1, shards, owners, target)
    published.publish(dual)
    progress: list[tuple[int, int]] = []

    async def record(done: int, total: int) -> None:
        progress.append((done, total))

    await mover.copy_moving(dual, record)
    await mover.verify(dual)
    published.publish(placement(version + 2, shards, target))
    await mover.clean_up(dual)
    return version + 2, target, progress


async def test_faces_move_online_without_loss_or_duplicates(shards: list[ShardRef]) -> None:
    published = MovingPlacements()
    owners = rebalance([None] * SLOT_COUNT, [shards[0].name])
    published.publish(placement(1, shards, owners))
    channels = ChannelPool()
    router = ShardRouter(published, channels, dim=DIM)
    mover = SlotMover()

    live: set[int] = set()
    for face_id in range(1, 3001):
        await router.add(face_id, vector(face_id), [GALLERY])
        live.add(face_id)

    stop = asyncio.Event()
    rng = random.Random(7)

    async def writer() -> None:
        """Adds new faces and deletes old ones, remembering what was acknowledged."""
        next_id = 100_000
        while not stop.is_set():
            if rng.random() < 0.6:
                await router.add(next_id, vector(next_id), [GALLERY])
                live.add(next_id)
                next_id += 1
            else:
                victim = rng.choice(sorted(live))
                await router.delete(victim, [GALLERY])
                live.discard(victim)
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    version, owners, progress = await reshard(
        mover, published, 1, shards, owners, [s.name for s in shards]
    )
    assert progress[0] == (0, progress[-1][1]) and progress[-1][0] == progress[-1][1]
    assert progress[-1][1] == sum(1 for i in range(SLOT_COUNT) if owners[i] != shards[0].name)
    # And back down to two shards, still under writes.
    version, owners, _ = await reshard(
        mover, published, version, shards, owners, [shards[0].name, shards[2].name]
    )
    stop.set()
    await task

    names = [s.name for s in shards]
    where: dict[int, list[str]] = {}
    for shard in shards:
        for face_id in await mover.ids_in(shard, GALLERY, set(range(SLOT_COUNT))):
            where.setdefault(face_id, []).append(shard.name)
    assert set(where) == live, "lost or resurrected faces"
    misplaced = {i: s for i, s in where.items() if s != [owners[slot_of(i)]]}
    assert not misplaced, f"{len(misplaced)} faces not exactly on their slot's shard"
    assert names[1] not in {s for held in where.values() for s in held}
    # Searches see every face once: the vector of a live face finds that face first.
    probe = rng.choice(sorted(live))
    outcome = await router.search(GALLERY, vector(probe), 3)
    assert outcome.hits[0][0] == probe and outcome.live == outcome.total == 3
    await mover.close()
    await channels.close()


def test_moves_pairs_every_moving_slot_once() -> None:
    refs = [ShardRef(f"s{i}", f"127.0.0.1:{i + 1}") for i in range(3)]
    before = rebalance([None] * SLOT_COUNT, ["s0", "s1"])
    after = rebalance(before, ["s0", "s1", "s2"])
    p = placement(2, refs, before, after)
    pairs = moves(p)
    assert set(pairs) == {(0, 2), (1, 2)}
    assert sum(len(s) for s in pairs.values()) == sum(
        1 for a, b in zip(before, after, strict=True) if a != b
    )
