"""`facegrid-indexer`: serve one index shard over gRPC."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

import grpc
from prometheus_client import REGISTRY, CollectorRegistry

from facegrid import grpcserver, httpserver
from facegrid.entrypoint import run_service
from facegrid.indexer import http_api, hugepages, metrics
from facegrid.indexer.core import Shard
from facegrid.indexer.core.errors import SnapshotDamaged
from facegrid.indexer.core.gallery import HnswParams
from facegrid.indexer.replica import FOLLOWER, Follower, ReplicationState
from facegrid.indexer.servicer import IndexShardServicer
from facegrid.indexer.settings import IndexerSettings
from facegrid.licence import LicenceClient
from facegrid.v1 import index_pb2, index_pb2_grpc

log = logging.getLogger(__name__)


def build(
    settings: IndexerSettings, registry: CollectorRegistry = REGISTRY
) -> tuple[Shard, grpcserver.GrpcService]:
    shard = Shard(
        settings.shard_name,
        settings.data_dir,
        HnswParams(
            settings.hnsw_m,
            settings.hnsw_ef_construction,
            settings.hnsw_ef_search,
            graph_min=settings.build_graph_min,
        ),
        fsync=settings.fsync,
        snapshot_every=settings.snapshot_every,
    )
    state = ReplicationState(settings.role, settings.primary)
    metrics.register(shard, state, registry)
    follower = Follower(shard, state, settings.data_dir)
    following: list[asyncio.Task[None]] = []

    async def follow() -> None:
        if state.role == FOLLOWER:
            following.append(asyncio.create_task(follower.run()))

    async def stop_following() -> None:
        for task in following:
            task.cancel()
        await asyncio.gather(*following, return_exceptions=True)
        following.clear()

    async def close() -> None:
        await stop_following()
        await asyncio.to_thread(shard.close)

    licence = LicenceClient(
        grpc.aio.insecure_channel(settings.licensing) if settings.licensing else None,
        "indexer",
        f"indexer-{settings.shard_name}-{socket.gethostname()}-{os.getpid()}",
        address=settings.listen,
        grace=settings.license_grace,
    )

    def fast_index() -> bool:
        return licence.has("fast-index")

    on_start: list[httpserver.Hook] = [follow, licence.start]
    on_stop: list[httpserver.Hook] = [close, licence.stop]
    if settings.http_listen:
        app = http_api.create_app(shard, state, fast_index)
        start_http, stop_http = httpserver.embedded(app, settings.http_listen, "shard HTTP API")
        on_start.insert(0, start_http)
        on_stop.insert(0, stop_http)

    service = grpcserver.GrpcService(
        name="indexer",
        listen=settings.listen,
        metrics_listen=settings.metrics_listen,
        registrations=[
            grpcserver.Registration(
                index_pb2_grpc.add_IndexShardServicer_to_server,
                IndexShardServicer(
                    shard,
                    state,
                    max_batch=settings.max_batch,
                    on_promote=stop_following,
                    fast_index=fast_index,
                ),
                index_pb2.DESCRIPTOR.services_by_name["IndexShard"].full_name,
            )
        ],
        on_start=on_start,
        on_stop=on_stop,
        registry=registry,
    )
    return shard, service


async def serve(settings: IndexerSettings) -> None:
    if settings.huge_pages:
        why_not = hugepages.reexec_with_huge_pages()  # returns only if it does not re-execute
        if why_not:
            log.warning("graphs on small pages: %s", why_not)
    try:
        _, service = build(settings)
    except SnapshotDamaged as e:
        # Never start from a guess: the operator restores or removes the damaged files.
        print(f"facegrid-indexer: cannot recover {settings.data_dir}: {e}", file=sys.stderr)
        sys.exit(1)
    await grpcserver.serve(service)


def main(argv: list[str] | None = None) -> None:
    run_service(
        "facegrid-indexer",
        "Serve one FaceGrid index shard over gRPC.",
        IndexerSettings,
        serve,
        argv,
    )
