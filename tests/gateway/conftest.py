"""The REST app in process (httpx over ASGI), wired to real backends on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from facegrid.gateway.adapters import ControlPlaneDirectory, MongoTokenStore, create_token
from facegrid.gateway.app import Backends, create_app
from facegrid.gateway.core.galleries import Galleries


@pytest.fixture
def token(mongo_server: str, mongo_db: str) -> str:
    return create_token(mongo_server, mongo_db, note="tests")


@pytest.fixture
async def backends(
    mongo_server: str, mongo_db: str, controlplane_address: str
) -> AsyncIterator[Backends]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server)
    async with grpc.aio.insecure_channel(controlplane_address) as channel:
        yield Backends(
            galleries=Galleries(ControlPlaneDirectory(channel, timeout=5)),
            tokens=MongoTokenStore(mongo, mongo_db),
            registry=CollectorRegistry(),
        )
    await mongo.close()


@pytest.fixture
async def api(backends: Backends, token: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(backends))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://facegrid",
        headers={"Authorization": f"Token {token}"},
    ) as client:
        yield client
