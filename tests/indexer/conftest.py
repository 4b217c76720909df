"""Indexer fixtures: shards on temporary folders, and one served over gRPC on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from facegrid.indexer.core import Shard
from facegrid.v1 import index_pb2_grpc
from tests.conftest import serve_shard


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
    server, address = await serve_shard(shard)
    async with grpc.aio.insecure_channel(address) as channel:
        yield index_pb2_grpc.IndexShardStub(channel)
    await server.stop(None)
