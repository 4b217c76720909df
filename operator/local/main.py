"""`facegrid-controlplane`: the local control plane, serving ControlPlane over gRPC."""

from __future__ import annotations

from typing import Any

import grpc
from prometheus_client import REGISTRY, CollectorRegistry
from pymongo import AsyncMongoClient

from facegrid import grpcserver
from facegrid.entrypoint import run_service
from facegrid.operator.core.placement import ShardRef, Unavailable
from facegrid.operator.local.plane import LocalControlPlane
from facegrid.operator.local.settings import ControlPlaneSettings
from facegrid.operator.local.store import Store
from facegrid.operator.servicer import ControlPlaneServicer
from facegrid.v1 import controlplane_pb2, controlplane_pb2_grpc, index_pb2, index_pb2_grpc

SHARD_CALL_TIMEOUT = 10.0


def shard_refs(settings: ControlPlaneSettings) -> tuple[ShardRef, ...]:
    refs = []
    for entry in settings.shards:
        name, _, address = entry.partition("=")
        refs.append(ShardRef(name, address))
    return tuple(refs)


async def drop_on_shard(shard: ShardRef, gallery: str) -> None:
    async with grpc.aio.insecure_channel(shard.address) as channel:
        stub = index_pb2_grpc.IndexShardStub(channel)
        try:
            await stub.DropGallery(
                index_pb2.DropGalleryRequest(gallery=gallery), timeout=SHARD_CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as e:
            raise Unavailable(f"shard {shard.name} ({shard.address}): {e.details()}") from e


async def build(
    settings: ControlPlaneSettings, registry: CollectorRegistry = REGISTRY
) -> tuple[grpcserver.GrpcService, LocalControlPlane]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongo_uri, tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    plane = LocalControlPlane(Store(client, settings.mongo_db), shard_refs(settings), drop_on_shard)
    await plane.start()

    async def close() -> None:
        await client.close()

    service = grpcserver.GrpcService(
        name="controlplane",
        listen=settings.listen,
        metrics_listen=settings.metrics_listen,
        registrations=[
            grpcserver.Registration(
                controlplane_pb2_grpc.add_ControlPlaneServicer_to_server,
                ControlPlaneServicer(plane),
                controlplane_pb2.DESCRIPTOR.services_by_name["ControlPlane"].full_name,
            )
        ],
        on_stop=[close],
        registry=registry,
    )
    return service, plane


async def serve(settings: ControlPlaneSettings) -> None:
    service, _ = await build(settings)
    await grpcserver.serve(service)


def main(argv: list[str] | None = None) -> None:
    run_service(
        "facegrid-controlplane",
        "Serve the local FaceGrid control plane (galleries, cameras, placement) over gRPC.",
        ControlPlaneSettings,
        serve,
        argv,
    )
