"""/camera over the real control plane: the seed's examples, and the rot/roi PUT semantics."""

from __future__ import annotations

import datetime as dt

import grpc
import httpx
import pytest

from facegrid.v1 import controlplane_pb2 as cp
from facegrid.v1 import controlplane_pb2_grpc


async def test_camera_lifecycle_as_in_the_reference(api: httpx.AsyncClient) -> None:
    created = await api.post(
        "/v0/camera",
        json={"meta": "test", "url": "http://test.com:1234/stream.flv", "detector": "detec1"},
    )
    assert created.status_code == 201
    camera = created.json()
    assert {k: camera[k] for k in ("meta", "url", "detector")} == {
        "meta": "test",
        "url": "http://test.com:1234/stream.flv",
        "detector": "detec1",
    }
    camera_id = camera["id"]
    assert len(camera_id) == 36  # a UUID

    listed = (await api.get("/v0/camera")).json()
    assert [c["id"] for c in listed] == [camera_id]
    assert (await api.get(f"/v0/camera/{camera_id}")).json()["meta"] == "test"

    renamed = await api.put(
        f"/v0/camera/{camera_id}",
        json={"meta": "newinfo", "url": "http://zzzz.com:1234/stream.flv"},
    )
    assert renamed.json()["meta"] == "newinfo"
    assert renamed.json()["detector"] == "detec1"  # untouched

    regions = await api.put(
        f"/v0/camera/{camera_id}", json={"rot": [120, 120, 35, 50], "roi": [100, 100, 40, 50]}
    )
    assert (regions.json()["rot"], regions.json()["roi"]) == (
        [120, 120, 35, 50],
        [100, 100, 40, 50],
    )
    assert regions.json()["meta"] == "newinfo"
    cleared = await api.put(f"/v0/camera/{camera_id}", json={"roi": [100, 100, 40, 50]})
    assert "rot" not in cleared.json()  # a PUT without rot removes it, as documented
    assert cleared.json()["roi"] == [100, 100, 40, 50]

    form = await api.put(f"/v0/camera/{camera_id}", data={"rot": "[10, 10, 0, 0]"})
    assert form.json()["rot"] == [10, 10, 0, 0]

    assert (await api.delete(f"/v0/camera/{camera_id}")).status_code == 204
    assert (await api.get(f"/v0/camera/{camera_id}")).status_code == 404
    assert (await api.delete(f"/v0/camera/{camera_id}")).status_code == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"rot": [0, 10, 0, 0]}, "rot"),
        ({"roi": [10, 10, -1, 0]}, "roi"),
        ({"roi": "100x100"}, "roi"),
        ({"rot": [1, 2, 3]}, "rot"),
        ({"meta": 5}, "meta"),
        # Bare JSON numbers Python reads but strict JSON cannot answer with (found by fuzzing).
        ({"rot": "Infinity"}, "rot"),
        ({"roi": "NaN"}, "roi"),
    ],
)
async def test_bad_camera_fields_are_refused(
    api: httpx.AsyncClient, body: dict[str, object], param: str
) -> None:
    response = await api.post("/v0/camera", json={"url": "rtsp://cam", **body})
    assert response.status_code == 400
    assert response.json()["code"] == "BAD_PARAM"
    assert response.json()["param"] == param
    assert (await api.get("/v0/camera")).json() == []


async def test_a_camera_shows_what_its_worker_reports(
    api: httpx.AsyncClient, controlplane_address: str
) -> None:
    """FaceGrid's own `status` field: absent until a video worker reports, then its phase,
    frames/s, posts and the time of the report (clients of the seed ignore the extra field)."""
    camera = (await api.post("/v1/camera", json={"url": "rtsp://cam/1", "detector": "d"})).json()
    assert "status" not in camera
    report = cp.CameraReport(id=camera["id"], streaming=True, frames_per_second=12.34, posts=3)
    report.last_post.FromDatetime(dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC))
    async with grpc.aio.insecure_channel(controlplane_address) as channel:
        plane = controlplane_pb2_grpc.ControlPlaneStub(channel)
        await plane.ReportCameras(cp.ReportCamerasRequest(worker="host-1", cameras=[report]))
        status = (await api.get(f"/v1/camera/{camera['id']}")).json()["status"]
        assert {k: status[k] for k in ("phase", "worker", "frames_per_second", "posts")} == {
            "phase": "Streaming",
            "worker": "host-1",
            "frames_per_second": 12.3,
            "posts": 3,
        }
        assert status["last_post"] == "2026-11-28T12:00:00+00:00" and "reported_at" in status
        refusal = cp.CameraRefusal(id=camera["id"], licence=True, reason="8 of 8 cameras leased")
        await plane.ReportCameras(cp.ReportCamerasRequest(worker="host-1", refused=[refusal]))
    listed = {c["id"]: c for c in (await api.get("/v1/camera")).json()}
    assert listed[camera["id"]]["status"]["phase"] == "Refused"
    assert listed[camera["id"]]["status"]["reason"] == "8 of 8 cameras leased"
