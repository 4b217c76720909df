"""Indexer fixtures: shards on temporary folders, and one served over gRPC on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from facegrid import grpcserver
from facegrid.indexer.core import Shard
from facegrid.indexer.servicer import IndexShardServicer
from facegrid.v1 import index_pb2, index_pb2_grpc


@pytest.fixture
def shard(tmp_path: Path) -> Iterator[Shard]:
    s = Shard("shard-test", tmp_path)
    yield s
    s.close()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
async def shard_stub(shard: Shard) -> AsyncIterator[index_pb2_grpc.IndexShardStub]:
    service = grpcserver.GrpcService(
        name="indexer-test",
        listen="127.0.0.1:0",
        registrations=[
            grpcserver.Registration(
                index_pb2_grpc.add_IndexShardServicer_to_server,
                IndexShardServicer(shard),
                index_pb2.DESCRIPTOR.services_by_name["IndexShard"].full_name,
            )
        ],
        registry=CollectorRegistry(),
    )
    server, _, port = await grpcserver.start(service)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield index_pb2_grpc.IndexShardStub(channel)
    await server.stop(None)
