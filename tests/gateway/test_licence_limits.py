"""The licence as the REST API applies it: the faces and cameras limits, refused cleanly with
nothing written, and a license server outage ridden out within the grace period.

A real license server (gRPC on loopback) holds a licence signed by a test vendor key; the
gateway's backends get the real quota adapters over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from pymongo import AsyncMongoClient

from facegrid.gateway.adapters import ControlPlaneCameras
from facegrid.gateway.licensed import LicensedCount
from facegrid.gateway.mongo import MongoFaceStore
from facegrid.licence import LicenceClient
from tests.conftest import free_port
from tests.gateway.test_faces_api import BIDEN, OBAMA, OBAMA2, TWO_PEOPLE
from tests.licensing.servers import new_vendor, running


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def licence_setup(
    tmp_path: Path, mongo_server: str, mongo_db: str, controlplane_address: str
) -> AsyncIterator[dict[str, Any]]:
    """A license server with a licence for 2 faces and one camera more than exist now."""
    async with contextlib.AsyncExitStack() as scope:
        control = await scope.enter_async_context(grpc.aio.insecure_channel(controlplane_address))
        cameras = ControlPlaneCameras(control, timeout=5)
        existing = len(await cameras.list())
        vendor = new_vendor(tmp_path)
        folder = tmp_path / "license"
        folder.mkdir()
        (folder / "a.lic").write_bytes(vendor.licence(limits={"faces": 2, "cameras": existing + 1}))
        port = free_port()
        # The license server in a scope of its own, so a test can stop it.
        server_scope = contextlib.AsyncExitStack()
        scope.push_async_callback(server_scope.aclose)
        server = await server_scope.enter_async_context(running(vendor, folder, grpc_port=port))
        channel = await scope.enter_async_context(grpc.aio.insecure_channel(server.address))
        clock = Clock()
        licence = LicenceClient(channel, "gateway", "gw-test", grace=60, clock=clock)
        await licence.refresh()
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
        scope.push_async_callback(mongo.close)
        store = MongoFaceStore(mongo, mongo_db)

        async def camera_count() -> int:
            return len(await cameras.list())

        yield {
            "licence": licence,
            "clock": clock,
            "store": store,
            "quotas": (
                LicensedCount(licence, "faces", store.count_active),
                LicensedCount(licence, "cameras", camera_count),
            ),
            "restart": lambda: running(vendor, folder, grpc_port=port),
            "vendor": vendor,
            "server": server_scope,
        }


@pytest.fixture
def quotas(licence_setup: dict[str, Any]) -> tuple[LicensedCount, LicensedCount]:
    faces, cameras = licence_setup["quotas"]
    return faces, cameras


async def _refreshed(licence: LicenceClient) -> None:
    """Heartbeats until the license server answers (the channel reconnects with backoff)."""
    for _ in range(100):
        try:
            await licence.refresh()
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    raise AssertionError("the license server never answered again")


async def _add(api: httpx.AsyncClient, photo: bytes) -> httpx.Response:
    return await api.post("/v0/face", files={"photo": ("p.jpg", photo)})


async def test_faces_beyond_the_licence_are_refused_and_nothing_is_written(
    api: httpx.AsyncClient, licence_setup: dict[str, Any]
) -> None:
    store: MongoFaceStore = licence_setup["store"]
    assert (await _add(api, OBAMA)).status_code == 200
    assert (await _add(api, BIDEN)).status_code == 200
    refused = await _add(api, OBAMA2)
    assert refused.status_code == 403
    assert refused.json() == {
        "code": "LICENSE_ERROR",
        "reason": "the licence allows 2 faces; 2 are in use and 1 more were asked",
    }
    assert await store.count_active() == 2
    assert len((await api.get("/v0/faces")).json()["results"]) == 2

    # Room for one: a photo with two faces is refused whole.
    first = (await api.get("/v0/faces")).json()["results"][0]
    assert (await api.delete(f"/v0/face/id/{first['id']}")).status_code == 204
    two = await api.post(
        "/v0/face", files={"photo": ("p.jpg", TWO_PEOPLE)}, data={"mf_selector": "all"}
    )
    assert two.status_code == 403
    assert "1 are in use and 2 more were asked" in two.json()["reason"]
    assert await store.count_active() == 1
    assert (await _add(api, OBAMA2)).status_code == 200


async def test_a_camera_beyond_the_licence_is_refused(api: httpx.AsyncClient) -> None:
    body = {"url": "rtsp://10.0.0.1/stream", "detector": "pool-a", "meta": "door"}
    created = await api.post("/v0/camera", json=body)
    assert created.status_code == 201, created.text
    refused = await api.post("/v0/camera", json=body)
    assert refused.status_code == 403
    assert refused.json()["code"] == "LICENSE_ERROR"
    assert "allows" in refused.json()["reason"] and "cameras" in refused.json()["reason"]
    assert (await api.delete(f"/v0/camera/{created.json()['id']}")).status_code == 204


async def test_a_license_server_outage_is_ridden_out_within_the_grace_period(
    api: httpx.AsyncClient, licence_setup: dict[str, Any]
) -> None:
    licence: LicenceClient = licence_setup["licence"]
    clock: Clock = licence_setup["clock"]
    await licence_setup["server"].aclose()  # the license server stops
    with pytest.raises(grpc.aio.AioRpcError):
        await licence.refresh()
    clock.now += 59  # within the grace period: work goes on
    assert (await _add(api, OBAMA)).status_code == 200

    async with licence_setup["restart"]():  # back in time: heard again
        await _refreshed(licence)
        assert (await _add(api, BIDEN)).status_code == 200

    clock.now += 61  # gone again, and for longer than the grace period
    refused = await _add(api, OBAMA2)
    assert refused.status_code == 403
    assert "has not answered for 61 s (grace period 60 s)" in refused.json()["reason"]


async def test_an_unusable_licence_refuses_new_faces_with_its_reason(
    api: httpx.AsyncClient, licence_setup: dict[str, Any], tmp_path: Path
) -> None:
    """A newer licence file that has expired replaces the good one: the license server reports
    why, and the gateway refuses new faces with that reason."""
    licence: LicenceClient = licence_setup["licence"]
    vendor = licence_setup["vendor"]
    (tmp_path / "license" / "newer.lic").write_bytes(vendor.licence(expires=time.time() - 60))
    for _ in range(50):  # the server reads its folder every 0.1 s
        await licence.refresh()
        if licence.problem():
            break
        await asyncio.sleep(0.1)
    refused = await _add(api, OBAMA)
    assert refused.status_code == 403
    assert refused.json()["code"] == "LICENSE_ERROR"
    assert refused.json()["reason"].startswith(
        "no valid licence: newer.lic: the licence expired on"
    )
