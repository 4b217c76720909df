"""Live events over Redis Streams, webhooks in MongoDB, and the webhook dispatcher.

Events go to one stream (`XADD ... MAXLEN ~`), so any number of gateways publish to and follow
the same history. Webhook delivery uses a consumer group: an entry is acknowledged (`XACK`)
only once every matching webhook took it or ran out of attempts; entries a dead gateway left
unacknowledged are claimed (`XAUTOCLAIM`) and delivered again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError, ResponseError

from facegrid.gateway.core.errors import ServiceUnavailable
from facegrid.gateway.core.live import (
    SIGNATURE_HEADER,
    Filters,
    Webhook,
    WebhookStore,
    encode,
    sign,
)

log = logging.getLogger(__name__)

STREAM = "facegrid:events"
GROUP = "webhooks"
MAX_LEN = 100_000


class RedisEventBus:
    def __init__(self, redis: aioredis.Redis, stream: str = STREAM, block_ms: int = 5000) -> None:
        self._redis = redis
        self._stream = stream
        self._block_ms = block_ms

    async def publish(self, body: dict[str, Any]) -> str:
        try:
            entry = await self._redis.xadd(
                self._stream, {"data": json.dumps(body)}, maxlen=MAX_LEN, approximate=True
            )
        except RedisError as e:
            raise ServiceUnavailable(f"event stream unavailable: {e}") from e
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    async def follow(self, after: str | None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        last = after or "$"
        if last == "$":
            # Resolve "$" once, so events published between two reads are not skipped.
            info = await self._redis.xinfo_stream(self._stream) if await self._exists() else None
            last = _text(info["last-generated-id"]) if info else "0-0"
        while True:
            batches: Any = await self._redis.xread(
                {self._stream: last}, count=100, block=self._block_ms
            )
            for _stream, entries in batches or []:
                for entry_id, fields in entries:
                    last = _text(entry_id)
                    yield last, json.loads(fields[b"data"])
            if not batches:
                yield "", {}  # a heartbeat, so the caller can send a keep-alive

    async def _exists(self) -> bool:
        return bool(await self._redis.exists(self._stream))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class MongoWebhookStore:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], db: str) -> None:
        self._hooks = client[db]["webhooks"]

    async def add(self, webhook: Webhook) -> None:
        doc = {
            "_id": webhook.id,
            "url": webhook.url,
            "secret": webhook.secret,
            "cam_ids": list(webhook.filters.cam_ids),
            "person_ids": list(webhook.filters.person_ids),
            "friend": webhook.filters.friend,
            "created_at": webhook.created_at,
        }
        try:
            await self._hooks.insert_one(doc)
        except PyMongoError as e:
            raise ServiceUnavailable(f"database unavailable: {e}") from e

    async def list(self) -> list[Webhook]:
        try:
            docs = await self._hooks.find().sort("created_at", 1).to_list()
        except PyMongoError as e:
            raise ServiceUnavailable(f"database unavailable: {e}") from e
        return [
            Webhook(
                d["_id"],
                d["url"],
                d["secret"],
                Filters(tuple(d["cam_ids"]), tuple(d["person_ids"]), d["friend"]),
                d["created_at"],
            )
            for d in docs
        ]

    async def delete(self, webhook_id: str) -> bool:
        try:
            result = await self._hooks.delete_one({"_id": webhook_id})
        except PyMongoError as e:
            raise ServiceUnavailable(f"database unavailable: {e}") from e
        return result.deleted_count == 1


class WebhookDispatcher:
    """Delivers stream entries to matching webhooks; run() until cancelled."""

    def __init__(
        self,
        redis: aioredis.Redis,
        webhooks: WebhookStore,
        *,
        stream: str = STREAM,
        attempts: int = 6,
        first_delay: float = 1.0,
        timeout: float = 5.0,
        block_ms: int = 5000,
        claim_idle_ms: int = 60_000,
    ) -> None:
        self._redis = redis
        self._webhooks = webhooks
        self._stream = stream
        self._attempts = attempts
        self._first_delay = first_delay
        self._timeout = timeout
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self)}"
        self.delivered = 0
        self.failed = 0

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as http:
            while True:
                try:
                    await self._ensure_group()
                    await self._claim_abandoned(http)
                    await self._consume(http)
                except RedisError as e:
                    log.warning("webhook dispatcher: %s; retrying", e)
                    await asyncio.sleep(1.0)

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._stream, GROUP, id="$", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def _claim_abandoned(self, http: httpx.AsyncClient) -> None:
        """Entries another (dead) consumer read but never acknowledged."""
        start = "0-0"
        while True:
            result: Any = await self._redis.xautoclaim(
                self._stream,
                GROUP,
                self._consumer,
                min_idle_time=self._claim_idle_ms,
                start_id=start,
            )
            start, entries = _text(result[0]), result[1]
            for entry_id, fields in entries:
                if fields:
                    await self._handle(http, _text(entry_id), fields)
            if start == "0-0":
                return

    async def _consume(self, http: httpx.AsyncClient) -> None:
        while True:
            batches: Any = await self._redis.xreadgroup(
                GROUP, self._consumer, {self._stream: ">"}, count=50, block=self._block_ms
            )
            for _stream, entries in batches or []:
                for entry_id, fields in entries:
                    await self._handle(http, _text(entry_id), fields)

    async def _handle(self, http: httpx.AsyncClient, entry_id: str, fields: Any) -> None:
        body = json.loads(fields[b"data"])
        hooks = [w for w in await self._webhooks.list() if w.filters.match(body)]
        await asyncio.gather(*(self._deliver(http, hook, entry_id, body) for hook in hooks))
        await self._redis.xack(self._stream, GROUP, entry_id)

    async def _deliver(
        self, http: httpx.AsyncClient, hook: Webhook, entry_id: str, body: dict[str, Any]
    ) -> None:
        payload = encode({**body, "stream_id": entry_id, "webhook_id": hook.id})
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(hook.secret, payload),
            "X-FaceGrid-Delivery": f"{hook.id}:{entry_id}",
        }
        delay = self._first_delay
        for attempt in range(1, self._attempts + 1):
            try:
                response = await http.post(hook.url, content=payload, headers=headers)
                if 200 <= response.status_code < 300:
                    self.delivered += 1
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as e:
                reason = str(e) or type(e).__name__
            if attempt < self._attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.failed += 1
        log.error(
            "webhook %s gave up on %s after %d attempts: %s",
            hook.id,
            entry_id,
            self._attempts,
            reason,
        )
