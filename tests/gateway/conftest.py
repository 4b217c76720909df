"""The REST app in process (httpx over ASGI), wired to real backends on loopback: SecantusDB,
the local control plane with a real index shard, and a real extractor process with the real
models. Photo URLs are fetched with the production fetcher, allowed into 127.0.0.0/8 so that a
local HTTP server can stand in for the internet (which these machines cannot reach)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from facegrid.fetch import FetchPolicy, fetch, parse_networks
from facegrid.gateway.adapters import (
    ControlPlaneCameras,
    ControlPlaneDirectory,
    MongoTokenStore,
    create_token,
)
from facegrid.gateway.app import Backends, create_app
from facegrid.gateway.core.faces import Faces
from facegrid.gateway.core.galleries import Galleries
from facegrid.gateway.core.indexes import Models
from facegrid.gateway.core.ports import Quota, Unlimited
from facegrid.gateway.extractor_client import ExtractorClient
from facegrid.gateway.index_plans import MongoIndexPlans
from facegrid.gateway.live import MongoWebhookStore, RedisEventBus
from facegrid.gateway.mongo import GridFsMedia, MongoFaceStore, MongoHistoryStore
from facegrid.gateway.shards import ChannelPool, ControlPlanePlacements, ShardRouter


@pytest.fixture
def token(mongo_server: str, mongo_db: str) -> str:
    return create_token(mongo_server, mongo_db, note="tests")


@pytest.fixture
async def stream_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """Redis for the event stream, under a key of this test's own."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def stream_key(mongo_db: str) -> str:
    return f"events:{mongo_db}"


@pytest.fixture
def quotas() -> tuple[Quota, Quota]:
    """The licence's (faces, cameras) limits: none here; tests of licensing override this."""
    return Unlimited(), Unlimited()


@pytest.fixture
def extra_extractors() -> list[str]:
    """Addresses of extractors serving other models than the default one: none here."""
    return []


@pytest.fixture
async def backends(
    quotas: tuple[Quota, Quota],
    mongo_server: str,
    mongo_db: str,
    controlplane_address: str,
    extractor_address: str,
    extra_extractors: list[str],
    stream_redis: aioredis.Redis,
    stream_key: str,
) -> AsyncIterator[Backends]:
    """The gateway's backends as facegrid-gateway wires them; extra_extractors serve other
    models. Index plans are read again every 0.2 s (the gateway's default is 1 s)."""
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
    store = MongoFaceStore(mongo, mongo_db)
    await store.ensure_indexes()
    media = GridFsMedia(mongo, mongo_db)
    history = MongoHistoryStore(mongo, mongo_db)
    bus = RedisEventBus(stream_redis, stream=stream_key, block_ms=200)
    await history.ensure_indexes()
    policy = FetchPolicy(timeout=5, allow=parse_networks(["127.0.0.0/8"]))
    shard_channels = ChannelPool()
    others = [grpc.aio.insecure_channel(a) for a in extra_extractors]
    async with (
        grpc.aio.insecure_channel(controlplane_address) as control,
        grpc.aio.insecure_channel(extractor_address) as extractor,
    ):
        router = ShardRouter(ControlPlanePlacements(control, timeout=5), shard_channels)
        galleries = Galleries(ControlPlaneDirectory(control, timeout=5))
        default = ExtractorClient(extractor, timeout=30)
        models = Models(
            default,
            [ExtractorClient(c, timeout=30) for c in others],
            MongoIndexPlans(mongo, mongo_db, refresh=0.2),
        )
        yield Backends(
            galleries=galleries,
            tokens=MongoTokenStore(mongo, mongo_db),
            registry=CollectorRegistry(),
            faces=Faces(
                default,
                router,
                store,
                media,
                galleries,
                history,
                bus=bus,
                quota=quotas[0],
                models=models,
            ),
            events=bus,
            webhooks=MongoWebhookStore(mongo, mongo_db),
            cameras=ControlPlaneCameras(control, timeout=5),
            media=media,
            fetcher=lambda url: fetch(url, policy),
            camera_quota=quotas[1],
        )
    for channel in others:
        await channel.close()
    await shard_channels.close()
    await mongo.close()


@pytest.fixture
async def api(backends: Backends, token: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(backends))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://facegrid",
        headers={"Authorization": f"Token {token}"},
        timeout=60,
    ) as client:
        yield client
