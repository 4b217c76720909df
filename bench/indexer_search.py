"""Index shard search: in process against the same shard over gRPC on loopback.

Prints add throughput, search latency percentiles and the gRPC overhead as a ratio against the
in-process baseline measured in the same run (these machines are noisy, ratios travel better).

    python bench/indexer_search.py [--faces 20000] [--dim 128] [--queries 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from prometheus_client import CollectorRegistry

from facegrid import grpcserver
from facegrid.gateway.shards import ChannelPool, Route, ShardCopies, ShardRouter, StaticPlacements
from facegrid.indexer import main as indexer_main
from facegrid.indexer.core import Shard
from facegrid.indexer.settings import IndexerSettings
from facegrid.slots import SLOT_COUNT
from facegrid.v1 import index_pb2, index_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(samples: list[float]) -> str:
    ms = np.array(samples) * 1000
    return f"p50 {np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms"


async def durable_adds(vector: bytes) -> None:
    """Acknowledged (fsynced) adds through gRPC into a shard running as its own process, the
    way the gateway reaches it: single-face calls, 10-face batches, and single-face adds from
    64 concurrent callers through the gateway's ShardRouter, which coalesces them."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
        process = subprocess.Popen(
            [sys.executable, "-m", "facegrid.indexer"],
            env={
                **env,
                "FACEGRID_INDEXER_DATA_DIR": tmp,
                "FACEGRID_INDEXER_LISTEN": f"127.0.0.1:{port}",
                "FACEGRID_INDEXER_METRICS_LISTEN": "",
                "FACEGRID_INDEXER_HTTP_LISTEN": "",
                "FACEGRID_INDEXER_LOG_LEVEL": os.environ.get(
                    "FACEGRID_INDEXER_LOG_LEVEL", "warning"
                ),
            },
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await asyncio.wait_for(channel.channel_ready(), 30)
                stub = index_pb2_grpc.IndexShardStub(channel)
                counter = [0]
                for clients, batch in ((1, 1), (16, 1), (16, 10)):
                    rate = await timed_adds(stub, counter, clients, batch, vector)
                    print(
                        f"durable adds over gRPC, {clients:2d} client(s), {batch:2d} per call: "
                        f"{rate:,.0f} faces/s"
                    )
            pool = ChannelPool()
            copies = (ShardCopies("bench", f"127.0.0.1:{port}"),)
            route = Route("bench", 1, copies, (0,) * SLOT_COUNT)
            router = ShardRouter(StaticPlacements([route]), pool)
            deadline = time.perf_counter() + 3.0
            start = time.perf_counter()

            async def caller() -> int:
                done = 0
                while time.perf_counter() < deadline:
                    counter[0] += 1
                    await router.add(counter[0], vector, ["bench"])
                    done += 1
                return done

            done = sum(await asyncio.gather(*(caller() for _ in range(64))))
            print(
                "durable single-face adds through the gateway's ShardRouter, 64 callers: "
                f"{done / (time.perf_counter() - start):,.0f} faces/s"
            )
            await pool.close()
        finally:
            process.terminate()
            process.wait()


async def timed_adds(
    stub: index_pb2_grpc.IndexShardStub, counter: list[int], clients: int, batch: int, vector: bytes
) -> float:
    deadline = time.perf_counter() + 3.0

    async def client() -> int:
        done = 0
        while time.perf_counter() < deadline:
            entries = []
            for _ in range(batch):
                counter[0] += 1
                entries.append(index_pb2.IndexEntry(id=counter[0], vector=vector))
            await stub.Add(index_pb2.AddRequest(gallery="bench", entries=entries))
            done += batch
        return done

    start = time.perf_counter()
    done = sum(await asyncio.gather(*(client() for _ in range(clients))))
    return done / (time.perf_counter() - start)


async def run(faces: int, dim: int, queries: int) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(faces, dim)).astype(np.float32)
    probes = vectors[rng.integers(0, faces, queries)] + rng.normal(
        scale=0.01, size=(queries, dim)
    ).astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        settings = IndexerSettings(
            listen=f"127.0.0.1:{free_port()}", metrics_listen=None, data_dir=Path(tmp), fsync=True
        )
        shard, service = indexer_main.build(settings, CollectorRegistry())

        start = time.perf_counter()
        for lo in range(0, faces, 1000):
            ids = np.arange(lo, min(lo + 1000, faces), dtype=np.uint64)
            shard.add("bench", ids, vectors[lo : lo + 1000])
        add_s = time.perf_counter() - start
        print(f"add: {faces} x {dim}-D in batches of 1000, fsync on: {faces / add_s:,.0f} faces/s")
        start = time.perf_counter()
        shard.wait_indexed(timeout=3600)
        build_s = time.perf_counter() - start
        print(f"graph caught up {build_s:.1f} s later ({faces / (add_s + build_s):,.0f} faces/s)")

        local = []
        correct = 0
        for q in probes:
            t = time.perf_counter()
            hits = shard.search("bench", q, 10).hits
            local.append(time.perf_counter() - t)
            exact = int(np.argmin(np.linalg.norm(vectors - q, axis=1)))
            correct += hits[0][0] == exact
        print(f"search in process (top 10): {percentiles(local)}; recall@1 {correct / queries:.3f}")

        server, _, port = await grpcserver.start(service)
        remote = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = index_pb2_grpc.IndexShardStub(channel)
            for q in probes:
                t = time.perf_counter()
                await stub.Search(
                    index_pb2.SearchRequest(gallery="bench", vector=q.tobytes(), top_n=10)
                )
                remote.append(time.perf_counter() - t)
        await server.stop(None)
        await durable_adds(vectors[0].tobytes())
        count = sum(g.count for g in shard.stats().galleries)
        start = time.perf_counter()
        shard.snapshot()
        snapshot_s = time.perf_counter() - start
        shard.close()
        start = time.perf_counter()
        reopened = Shard("bench", Path(tmp))
        restart_s = time.perf_counter() - start
        assert sum(g.count for g in reopened.stats().galleries) == count
        reopened.close()
        print(
            f"snapshot of {count:,} vectors: {snapshot_s:.2f} s; restart from it: {restart_s:.2f} s"
        )
        print(f"search over gRPC (top 10):  {percentiles(remote)}")
        print(f"gRPC / in-process median latency: {np.median(remote) / np.median(local):.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(run(args.faces, args.dim, args.queries))


if __name__ == "__main__":
    main()
