"""Online resharding speed: a gallery on one shard spread over three while a client writes.

Three real index shards in this process (gRPC on loopback, fsync on), N faces on the first,
then the operator's stages (dual write, copy, verify, cut over, clean up) through the same
SlotMover the operator uses, while a writer adds and deletes faces through the gateway's
ShardRouter. Prints the time of each stage, faces copied per second, the writer's operations
per second before and during the move, and checks that every acknowledged face ends on exactly
its slot's shard.

    python bench/reshard.py --faces 100000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from facegrid import grpcserver
from facegrid.gateway.shards import ChannelPool, Route, ShardCopies, ShardRouter
from facegrid.indexer import main as indexer_main
from facegrid.indexer.settings import IndexerSettings
from facegrid.operator.core.placement import (
    SLOT_COUNT,
    Placement,
    ShardRef,
    rebalance,
    slot_of,
)
from facegrid.operator.reshard import SlotMover
from facegrid.v1 import index_pb2 as pb

GALLERY = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DIM = 128


class Published:
    def __init__(self) -> None:
        self.current: Route | None = None

    def publish(self, p: Placement) -> None:
        shards = tuple(ShardCopies(s.name, s.address) for s in p.shards)
        self.current = Route(p.gallery, p.version, shards, p.slot_shards, p.target)

    async def route(self, gallery: str) -> Route:
        assert self.current is not None
        return self.current


def placement(
    version: int, refs: list[ShardRef], owners: tuple[str, ...], target: tuple[str, ...] = ()
) -> Placement:
    names = [r.name for r in refs]
    return Placement(
        GALLERY,
        version,
        tuple(refs),
        tuple(names.index(o) for o in owners),
        tuple(names.index(o) for o in target),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=100_000)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="reshard-bench-"))
    servers, refs = [], []
    for i in range(3):
        settings = IndexerSettings(
            listen=f"127.0.0.1:{free_port()}",
            data_dir=folder / f"shard-{i}",
            metrics_listen=None,
            http_listen=None,
        )
        shard, service = indexer_main.build(settings, CollectorRegistry())
        server, _, port = await grpcserver.start(service)
        servers.append((server, shard))
        refs.append(ShardRef(f"indexer-{i}", f"127.0.0.1:{port}"))

    published = Published()
    owners = rebalance([None] * SLOT_COUNT, [refs[0].name])
    published.publish(placement(1, refs, owners))
    channels = ChannelPool()
    router = ShardRouter(published, channels, dim=DIM)
    mover = SlotMover()

    rng = np.random.default_rng(1)
    started = time.perf_counter()
    stub = channels.stub(refs[0].address)
    for start in range(0, args.faces, 5000):
        ids = range(start + 1, min(start + 5001, args.faces + 1))
        vectors = rng.standard_normal((len(ids), DIM)).astype("<f4")
        await stub.Add(
            pb.AddRequest(
                gallery=GALLERY,
                entries=[
                    pb.IndexEntry(id=i, vector=v.tobytes())
                    for i, v in zip(ids, vectors, strict=True)
                ],
            )
        )
    print(f"{args.faces:,} faces on one shard in {time.perf_counter() - started:.1f} s")

    live = set(range(1, args.faces + 1))
    stop = asyncio.Event()
    ops: list[float] = []
    pick = random.Random(2)

    async def writer() -> None:
        next_id = 10_000_000
        while not stop.is_set():
            if pick.random() < 0.7:
                vector = rng.standard_normal(DIM).astype("<f4").tobytes()
                await router.add(next_id, vector, [GALLERY])
                live.add(next_id)
                next_id += 1
            else:
                victim = pick.randrange(1, args.faces + 1)
                if victim in live:
                    await router.delete(victim, [GALLERY])
                    live.discard(victim)
            ops.append(time.perf_counter())

    task = asyncio.create_task(writer())
    await asyncio.sleep(3)
    baseline = len(ops) / 3

    target = rebalance(owners, [r.name for r in refs])
    moving = placement(2, refs, owners, target)
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    published.publish(moving)

    async def progress(done: int, total: int) -> None:
        pass

    mark = time.perf_counter()
    copied = await mover.copy_moving(moving, progress)
    stages["copy"] = time.perf_counter() - mark
    mark = time.perf_counter()
    removed, added = await mover.verify(moving)
    stages["verify"] = time.perf_counter() - mark
    published.publish(placement(3, refs, target))
    mark = time.perf_counter()
    cleaned = await mover.clean_up(moving)
    stages["clean up"] = time.perf_counter() - mark
    total = time.perf_counter() - t0
    during = sum(1 for t in ops if t >= t0) / total
    stop.set()
    await task

    where: dict[int, list[str]] = {}
    for ref in refs:
        for face_id in await mover.ids_in(ref, GALLERY, set(range(SLOT_COUNT))):
            where.setdefault(face_id, []).append(ref.name)
    exact = set(where) == live and all(s == [target[slot_of(i)]] for i, s in where.items())

    moved = sum(1 for a, b in zip(owners, target, strict=True) if a != b)
    print(f"reshard 1 -> 3 shards: {moved} of 1024 slots")
    for name, seconds in stages.items():
        print(f"  {name:9s} {seconds:7.1f} s")
    print(f"  copied {copied:,} faces: {copied / stages['copy']:,.0f} faces/s")
    print(
        f"  verify: {removed} removed from targets, {added} copied again; "
        f"clean up removed {cleaned:,}"
    )
    print(f"writer: {baseline:.0f} ops/s before, {during:.0f} ops/s during the move")
    print(f"every acknowledged face exactly once, on its slot's shard: {'yes' if exact else 'NO'}")

    await mover.close()
    await channels.close()
    for server, shard in servers:
        await server.stop(None)
        shard.close()


if __name__ == "__main__":
    asyncio.run(main())
