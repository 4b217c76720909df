"""Real servers for `facegrid reindex`: SecantusDB (MongoDB's stand-in), three index shards on
loopback, and the local control plane placing every gallery over them. Faces are written with
the gateway's own MongoFaceStore, so the records are exactly what the gateway stores."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from facegrid import grpcserver
from facegrid.gateway.mongo import MongoFaceStore
from facegrid.gateway.reindex.store import FaceRecords
from facegrid.gateway.reindex.topology import ControlPlane, Shards
from facegrid.gateway.shards import ChannelPool
from facegrid.indexer.core import Shard
from facegrid.operator.local import main as controlplane_main
from facegrid.operator.local.settings import ControlPlaneSettings
from facegrid.v1 import controlplane_pb2 as cp
from facegrid.v1 import controlplane_pb2_grpc
from tests.conftest import free_port, serve_shard
from tests.reindex.reindex_servers import Served, Tools, count_adds


@pytest.fixture
async def shards(tmp_path: Path) -> AsyncIterator[list[Served]]:
    served = []
    for i in range(3):
        shard = Shard(f"shard-{i}", tmp_path / f"shard-{i}")
        server, address = await serve_shard(shard)
        served.append(Served(shard, address, server))
        count_adds(served[-1])
    yield served
    for s in served:
        await s.server.stop(None)
        s.shard.close()


@pytest.fixture
async def plane_address(
    mongo_server: str, mongo_db: str, shards: list[Served]
) -> AsyncIterator[str]:
    settings = ControlPlaneSettings(
        listen=f"127.0.0.1:{free_port()}",
        metrics_listen=None,
        mongo_uri=mongo_server,
        mongo_db=mongo_db,
        shards=[f"{s.shard.name}={s.address}" for s in shards],
    )
    service, _ = await controlplane_main.build(settings, CollectorRegistry())
    server, _, port = await grpcserver.start(service)
    yield f"127.0.0.1:{port}"
    await server.stop(None)
    for close in service.on_stop:
        await close()


@pytest.fixture
async def plane_channel(plane_address: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(plane_address) as channel:
        yield channel


@pytest.fixture
async def create_gallery(plane_channel: grpc.aio.Channel) -> Any:
    stub = controlplane_pb2_grpc.ControlPlaneStub(plane_channel)

    async def create(name: str) -> None:
        await stub.CreateGallery(cp.CreateGalleryRequest(name=name))

    return create


@pytest.fixture
async def mongo(mongo_server: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
    yield client
    await client.close()


@pytest.fixture
async def face_store(mongo: AsyncMongoClient[dict[str, Any]], mongo_db: str) -> MongoFaceStore:
    store = MongoFaceStore(mongo, mongo_db)
    await store.ensure_indexes()
    return store


@pytest.fixture
async def tools(
    mongo: AsyncMongoClient[dict[str, Any]], mongo_db: str, plane_channel: grpc.aio.Channel
) -> AsyncIterator[Tools]:
    channels = ChannelPool()
    yield Tools(
        FaceRecords(mongo, mongo_db), ControlPlane(plane_channel, 10.0), Shards(channels, 10.0)
    )
    await channels.close()


@pytest.fixture
def cli_env() -> dict[str, str]:
    """The environment of a `facegrid reindex` subprocess: none of the caller's settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
