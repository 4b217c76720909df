"""`facegrid-gateway`: the REST API, served by uvicorn."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
from typing import Any

import grpc
import redis.asyncio as aioredis
import uvicorn
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from facegrid import balancing
from facegrid.entrypoint import run_service
from facegrid.fetch import FetchPolicy, fetch, parse_networks
from facegrid.gateway.adapters import (
    ControlPlaneCameras,
    ControlPlaneDirectory,
    MongoTokenStore,
    grpc_serving,
)
from facegrid.gateway.app import Backends, create_app
from facegrid.gateway.core.faces import Faces
from facegrid.gateway.core.galleries import Galleries
from facegrid.gateway.core.indexes import Models
from facegrid.gateway.core.persons import PersonPolicy
from facegrid.gateway.extractor_client import ExtractorClient
from facegrid.gateway.index_plans import MongoIndexPlans
from facegrid.gateway.licensed import LicensedCount
from facegrid.gateway.live import MongoWebhookStore, RedisEventBus, WebhookDispatcher
from facegrid.gateway.media import media_store
from facegrid.gateway.mongo import MongoFaceStore, MongoHistoryStore
from facegrid.gateway.settings import GatewaySettings
from facegrid.gateway.shards import ChannelPool, ControlPlanePlacements, ShardRouter
from facegrid.httpserver import shared_socket
from facegrid.licence import LicenceClient
from facegrid.settings import split_host_port

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 2.0


async def serve(settings: GatewaySettings) -> None:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongo_uri, tz_aware=True, serverSelectionTimeoutMS=5_000
    )
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=HEALTH_TIMEOUT)
    channels = {
        "controlplane": grpc.aio.insecure_channel(settings.controlplane),
        "extractor": balancing.channel(settings.extractor),
        "licensing": grpc.aio.insecure_channel(settings.licensing),
    }

    async def mongo_ok() -> bool:
        try:
            await mongo.admin.command("ping")
        except PyMongoError:
            return False
        return True

    async def redis_ok() -> bool:
        try:
            return bool(await redis.ping())
        except RedisError:
            return False

    def grpc_check(channel: grpc.aio.Channel) -> Any:
        return lambda: grpc_serving(channel, HEALTH_TIMEOUT)

    store = MongoFaceStore(mongo, settings.mongo_db)
    # Streams block on reads: a connection of their own, without the health-check timeout.
    stream_redis = aioredis.Redis.from_url(settings.redis_url)
    bus = RedisEventBus(stream_redis)
    webhooks = MongoWebhookStore(mongo, settings.mongo_db)
    dispatcher = WebhookDispatcher(
        stream_redis,
        webhooks,
        attempts=settings.webhook_attempts,
        first_delay=settings.webhook_first_delay,
    )
    history = MongoHistoryStore(mongo, settings.mongo_db)
    galleries = Galleries(ControlPlaneDirectory(channels["controlplane"], settings.call_timeout))
    persons = PersonPolicy(
        identify=settings.person_identify,
        identify_global=settings.person_identify_global,
        threshold=settings.person_identify_threshold,
        friend_count=settings.friend_count,
        friend_interval=dt.timedelta(seconds=settings.friend_interval),
    )
    media = media_store(settings.media_dir, mongo, settings.mongo_db)
    placements = ControlPlanePlacements(channels["controlplane"], settings.call_timeout)
    shard_channels = ChannelPool()
    index = ShardRouter(placements, shard_channels, timeout=settings.search_timeout)
    policy = FetchPolicy(
        timeout=settings.fetch_timeout,
        allow=parse_networks(settings.fetch_allow),
        proxy=settings.fetch_proxy,
    )
    cameras = ControlPlaneCameras(channels["controlplane"], settings.call_timeout)

    async def usage() -> dict[str, int]:
        return {"faces": await face_quota.in_use()}

    async def camera_count() -> int:
        return len(await cameras.list())

    licence = LicenceClient(
        channels["licensing"],
        "gateway",
        f"gateway-{socket.gethostname()}-{os.getpid()}",
        address=settings.listen,
        usage=usage,
        grace=settings.license_grace,
    )
    face_quota = LicensedCount(licence, "faces", store.count_active)
    extractor = ExtractorClient(channels["extractor"], settings.call_timeout)
    extra_channels = [balancing.channel(a) for a in settings.extra_extractors]
    models = Models(
        extractor,
        [ExtractorClient(c, settings.call_timeout) for c in extra_channels],
        MongoIndexPlans(mongo, settings.mongo_db, refresh=settings.index_refresh),
    )
    backends = Backends(
        galleries=galleries,
        tokens=MongoTokenStore(mongo, settings.mongo_db),
        faces=Faces(
            extractor,
            index,
            store,
            media,
            galleries,
            history,
            persons,
            bus=bus,
            public_url=settings.public_url,
            quota=face_quota,
            models=models,
            strict_search=not settings.tntapi_ignore_search_errors,
        ),
        cameras=cameras,
        camera_quota=LicensedCount(licence, "cameras", camera_count),
        gae=settings.gae,
        events=bus,
        webhooks=webhooks,
        media=media,
        fetcher=lambda url: fetch(url, policy),
        registry=REGISTRY,
        readiness={
            "mongodb": mongo_ok,
            "redis": redis_ok,
            **{name: grpc_check(channel) for name, channel in channels.items()},
        },
    )
    host, port = split_host_port(settings.listen)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(backends),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    try:
        await store.ensure_indexes()
        await history.ensure_indexes()
    except PyMongoError as e:
        log.warning("could not create MongoDB indexes yet (%s); queries may be slow", e)
    watcher = asyncio.create_task(placements.watch())
    delivering = asyncio.create_task(dispatcher.run())
    licensing = asyncio.create_task(licence.run())
    log.info("gateway serving REST on http://%s", settings.listen)
    try:
        await server.serve(sockets=[shared_socket(host, port)] if settings.reuse_port else None)
    finally:
        for task in (watcher, delivering, licensing):
            task.cancel()
        await asyncio.gather(watcher, delivering, licensing, return_exceptions=True)
        await stream_redis.aclose()
        await shard_channels.close()
        for channel in [*channels.values(), *extra_channels]:
            await channel.close()
        await redis.aclose()
        await mongo.close()
        log.info("gateway stopped")


def main(argv: list[str] | None = None) -> None:
    run_service(
        "facegrid-gateway",
        "Serve the FindFace-compatible FaceGrid REST API.",
        GatewaySettings,
        serve,
        argv,
    )
