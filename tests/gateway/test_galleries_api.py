"""`/galleries` through the gateway, the control plane and MongoDB, in the FindFace format."""

from __future__ import annotations

import grpc
import httpx
import pytest
from prometheus_client import CollectorRegistry

from facegrid.gateway.adapters import ControlPlaneDirectory
from facegrid.gateway.app import Backends, create_app
from facegrid.gateway.core.galleries import Galleries


@pytest.mark.parametrize("version", ["v0", "v1"])
async def test_create_list_delete(api: httpx.AsyncClient, version: str) -> None:
    listed = await api.get(f"/{version}/galleries")
    assert listed.status_code == 200
    assert listed.json() == {"results": ["default"]}

    created = await api.post(f"/{version}/galleries/testgal")
    assert created.status_code == 201
    assert created.json() == {"name": "testgal"}
    assert (await api.get(f"/{version}/galleries/")).json() == {"results": ["default", "testgal"]}

    deleted = await api.delete(f"/{version}/galleries/testgal")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await api.get(f"/{version}/galleries")).json() == {"results": ["default"]}


@pytest.mark.parametrize(
    ("method", "path", "status", "code", "param"),
    [
        ("POST", "/v1/galleries/bad%20name", 400, "BAD_PARAM", "gallery"),
        ("POST", "/v1/galleries/" + "x" * 49, 400, "BAD_PARAM", "gallery"),
        ("DELETE", "/v1/galleries/missing", 404, "NOT_FOUND", "gallery"),
        ("DELETE", "/v1/galleries/default", 403, "FORBIDDEN", "gallery"),
        ("GET", "/v1/no-such-thing", 404, "NOT_FOUND", None),
        ("PUT", "/v1/galleries", 405, "METHOD_NOT_ALLOWED", None),
    ],
)
async def test_errors_in_findface_format(
    api: httpx.AsyncClient, method: str, path: str, status: int, code: str, param: str | None
) -> None:
    response = await api.request(method, path)
    assert response.status_code == status
    body = response.json()
    assert body["code"] == code
    assert body["reason"]
    assert body.get("param") == param


async def test_existing_gallery_conflicts(api: httpx.AsyncClient) -> None:
    assert (await api.post("/v1/galleries/twice")).status_code == 201
    again = await api.post("/v1/galleries/twice")
    assert again.status_code == 409
    assert again.json() == {
        "code": "ALREADY_EXISTS",
        "reason": "gallery 'twice' already exists",
        "param": "gallery",
        "value": "twice",
    }


@pytest.mark.parametrize("header", [None, "Token wrong-token", "Bearer something", "Token", ""])
async def test_requests_without_a_valid_token_fail(
    api: httpx.AsyncClient, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    api.headers.pop("Authorization")
    response = await api.get("/v1/galleries", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_FAILED"
    created = await api.post("/v1/galleries/sneaky", headers=headers)
    assert created.status_code == 401


async def test_metrics_count_requests_by_route(api: httpx.AsyncClient, backends: Backends) -> None:
    await api.get("/v1/galleries")
    await api.post("/v1/galleries/metered")
    await api.post("/v1/galleries/metered")
    exposition = (await api.get("/metrics")).text
    assert (
        'facegrid_requests_total{method="POST /galleries/{gallery}",outcome="409",'
        'protocol="http",service="gateway"} 1.0'
    ) in exposition
    assert 'facegrid_request_duration_seconds_count{method="GET /galleries"' in exposition


async def test_backend_outage_is_service_unavailable(
    backends: Backends, token: str, unused_port: int
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{unused_port}") as dead:
        broken = Backends(
            galleries=Galleries(ControlPlaneDirectory(dead, timeout=1)),
            tokens=backends.tokens,
            registry=CollectorRegistry(),
            faces=backends.faces,
            cameras=backends.cameras,
            events=backends.events,
            webhooks=backends.webhooks,
            media=backends.media,
            fetcher=backends.fetcher,
            readiness={"controlplane": _false, "mongodb": _true},
        )
        transport = httpx.ASGITransport(app=create_app(broken))
        async with httpx.AsyncClient(transport=transport, base_url="http://facegrid") as client:
            response = await client.get(
                "/v1/galleries", headers={"Authorization": f"Token {token}"}
            )
            assert response.status_code == 503
            assert response.json()["code"] == "SERVICE_UNAVAILABLE"
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["components"] == {"controlplane": "down", "mongodb": "ok"}


async def _false() -> bool:
    return False


async def _true() -> bool:
    return True
