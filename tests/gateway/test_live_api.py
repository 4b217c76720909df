"""Live events: published on a Redis stream, followed over SSE, delivered to signed webhooks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from facegrid.gateway.app import Backends
from facegrid.gateway.core.live import SIGNATURE_HEADER, sign
from facegrid.gateway.live import WebhookDispatcher
from tests.conftest import FACES, free_port

OBAMA = (FACES / "face_recognition" / "examples" / "obama.jpg").read_bytes()
BIDEN = (FACES / "face_recognition" / "examples" / "biden.jpg").read_bytes()
CAM = "cam-front-door"


async def _post(api: httpx.AsyncClient, photo: bytes, cam: str = CAM) -> dict[str, Any]:
    response = await api.post(
        "/v1/face", files={"photo": ("p.jpg", photo)}, data={"cam_id": cam, "meta": "m"}
    )
    assert response.status_code == 200, response.text
    return dict(response.json()["results"][0])


def _sse(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            events.append(fields)
    return events


async def test_events_are_published_and_followed_over_sse(
    api: httpx.AsyncClient, stream_redis: aioredis.Redis, stream_key: str
) -> None:
    first = await _post(api, OBAMA)
    assert await stream_redis.xlen(stream_key) == 1

    async def follow(**params: Any) -> httpx.Response:
        return await api.get("/v1/events", params=params, headers={"Last-Event-ID": "0-0"})

    # From the start of the stream (Last-Event-ID 0-0), ended by `limit`.
    reader = asyncio.create_task(follow(limit=2))
    second = await _post(api, BIDEN, cam="cam-garage")
    response = await asyncio.wait_for(reader, 20)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _sse(response.text)
    assert [e["event"] for e in events] == ["face", "face"]
    bodies = [json.loads(e["data"]) for e in events]
    assert [b["face_id"] for b in bodies] == [first["id"], second["id"]]
    assert bodies[0]["cam_id"] == CAM and bodies[0]["meta"] == "m"

    only_garage = await asyncio.wait_for(follow(limit=1, cam_ids="cam-garage"), 20)
    (event,) = _sse(only_garage.text)
    assert json.loads(event["data"])["face_id"] == second["id"]

    resumed = await asyncio.wait_for(
        api.get("/v1/events", params={"limit": 1}, headers={"Last-Event-ID": events[0]["id"]}), 20
    )
    assert json.loads(_sse(resumed.text)[0]["data"])["face_id"] == second["id"]


class Receiver:
    """A real HTTP server that takes webhook deliveries, failing the first `fail` of them."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.attempts = 0
        self.received: list[tuple[bytes, dict[str, str]]] = []

    async def hook(self, request: Request) -> Response:
        self.attempts += 1
        if self.attempts <= self.fail:
            return Response(status_code=503)
        self.received.append((await request.body(), dict(request.headers)))
        return Response(status_code=204)


@pytest.fixture
def receiver() -> Receiver:
    return Receiver(fail=2)


@pytest.fixture
async def receiver_url(receiver: Receiver) -> AsyncIterator[str]:
    port = free_port()
    app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}/hook"
    server.should_exit = True
    await task


async def test_webhooks_get_signed_events_with_retries(
    api: httpx.AsyncClient,
    backends: Backends,
    stream_redis: aioredis.Redis,
    stream_key: str,
    receiver: Receiver,
    receiver_url: str,
) -> None:
    created = await api.post("/v1/webhooks", json={"url": receiver_url, "cam_ids": [CAM]})
    assert created.status_code == 201
    hook = created.json()
    secret = hook["secret"]
    listed = (await api.get("/v1/webhooks")).json()["results"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]

    dispatcher = WebhookDispatcher(
        stream_redis, backends.webhooks, stream=stream_key, first_delay=0.05, block_ms=100
    )
    delivering = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.sleep(0.3)  # the consumer group exists before events arrive
        face = await _post(api, OBAMA)
        await _post(api, BIDEN, cam="elsewhere")  # filtered out
        for _ in range(200):
            pending = await stream_redis.xpending(stream_key, "webhooks")
            if receiver.received and pending["pending"] == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        delivering.cancel()
        await asyncio.gather(delivering, return_exceptions=True)

    (body, headers) = receiver.received[0]
    assert receiver.attempts == 3  # two 503s, then delivered
    assert headers[SIGNATURE_HEADER.lower()] == sign(secret, body)
    delivered = json.loads(body)
    assert (delivered["face_id"], delivered["webhook_id"]) == (face["id"], hook["id"])
    assert len(receiver.received) == 1
    assert dispatcher.delivered == 1
    assert pending["pending"] == 0  # both entries acknowledged, the filtered one too

    assert (await api.delete(f"/v1/webhooks/{hook['id']}")).status_code == 204
    assert (await api.delete(f"/v1/webhooks/{hook['id']}")).status_code == 404
    bad = await api.post("/v1/webhooks", json={"url": "ftp://x"})
    assert bad.status_code == 400 and bad.json()["param"] == "url"


async def test_entries_a_dead_gateway_left_are_delivered_again(
    api: httpx.AsyncClient,
    backends: Backends,
    stream_redis: aioredis.Redis,
    stream_key: str,
    receiver: Receiver,
    receiver_url: str,
) -> None:
    receiver.fail = 0
    await api.post("/v1/webhooks", json={"url": receiver_url})
    await stream_redis.xgroup_create(stream_key, "webhooks", id="$", mkstream=True)
    face = await _post(api, OBAMA)
    # A gateway reads the entry for delivery, then dies before acknowledging it.
    await stream_redis.xreadgroup("webhooks", "dead-gateway", {stream_key: ">"}, count=10)

    dispatcher = WebhookDispatcher(
        stream_redis, backends.webhooks, stream=stream_key, block_ms=100, claim_idle_ms=100
    )
    await asyncio.sleep(0.2)
    delivering = asyncio.create_task(dispatcher.run())
    try:
        for _ in range(100):
            if receiver.received:
                break
            await asyncio.sleep(0.05)
    finally:
        delivering.cancel()
        await asyncio.gather(delivering, return_exceptions=True)
    (body, _headers) = receiver.received[0]
    assert json.loads(body)["face_id"] == face["id"]
