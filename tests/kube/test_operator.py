"""The operator end to end: kopf handlers and the ControlPlane service, against an in-memory
Kubernetes API server (tests/kube/apiserver.py says why and what it fills in) and three real
index shards on loopback.

What a real cluster adds and these tests cannot show: controllers (the StatefulSet and the
worker Deployments never get pods by themselves, so the tests create the worker pods), RBAC,
schema defaulting and garbage collection. The reconcile rules are unit-tested on their own in
tests/controlplane/.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import kopf
import numpy as np
import pytest
import yaml
from kubernetes import client
from prometheus_client import CollectorRegistry

from facegrid import grpcserver
from facegrid.indexer import main as indexer_main
from facegrid.indexer.settings import IndexerSettings
from facegrid.operator.core.placement import SLOT_COUNT, slot_of
from facegrid.operator.main import run
from facegrid.operator.settings import OperatorSettings
from facegrid.v1 import controlplane_pb2 as cp
from facegrid.v1 import controlplane_pb2_grpc, index_pb2, index_pb2_grpc
from tests.conftest import free_port
from tests.kube.apiserver import NAMESPACE, ApiServer

pytestmark = pytest.mark.kmock(cls=ApiServer)

SHARDS = 3
TEMPLATE = {
    "namePrefix": "facegrid-video",
    "detectorsMax": 4,
    "pools": {"entrance": {"detectorsMax": 2}},
    "deployment": {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"labels": {"app.kubernetes.io/component": "video"}},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/component": "video"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/component": "video"}},
                "spec": {"containers": [{"name": "video", "image": "facegrid:test"}]},
            },
        },
    },
}


def port_block(size: int) -> int:
    """A base port with `size` free ports from it (shard i listens on base + i)."""
    for _ in range(200):
        base = free_port()
        if base + size >= 65535:
            continue
        free = True
        for port in range(base, base + size):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    free = False
        if free:
            return base
    raise RuntimeError("no block of free ports")


@dataclass
class Cluster:
    api: ApiServer
    k8s: client.ApiClient
    plane: controlplane_pb2_grpc.ControlPlaneStub
    shards: list[index_pb2_grpc.IndexShardStub]
    metrics: CollectorRegistry

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics.get_sample_value(name, labels)

    def _stored(self, plural: str, name: str) -> Any:
        for (resource, namespace, stored), obj in self.api.objects.items():
            if resource.plural == plural and namespace == NAMESPACE and stored == name:
                return obj
        return None

    def object(self, plural: str, name: str) -> dict[str, Any] | None:
        """The object as the API server holds it now; None once it is deleted."""
        obj = self._stored(plural, name)
        if obj is None or obj.deleted:
            return None
        return dict(json.loads(json.dumps(obj.raw)))

    def history(self, plural: str, name: str) -> list[dict[str, Any]]:
        """Every state the object went through, oldest first."""
        obj = self._stored(plural, name)
        return [json.loads(json.dumps(v.raw)) for v in obj.history if v]

    async def create(self, plural: str, body: dict[str, Any]) -> None:
        custom = client.CustomObjectsApi(self.k8s)
        await asyncio.to_thread(
            custom.create_namespaced_custom_object, "facegrid.io", "v1", NAMESPACE, plural, body
        )

    async def patch(self, plural: str, name: str, patch: dict[str, Any]) -> None:
        custom = client.CustomObjectsApi(self.k8s)
        await asyncio.to_thread(
            custom.patch_namespaced_custom_object,
            "facegrid.io",
            "v1",
            NAMESPACE,
            plural,
            name,
            patch,
        )

    async def pod(self, name: str, pool: str, *, delete: bool = False) -> None:
        core = client.CoreV1Api(self.k8s)
        if delete:
            await asyncio.to_thread(
                core.delete_namespaced_pod, name, NAMESPACE, _preload_content=False
            )
            return
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": {"facegrid.io/pool": pool},
            },
            "spec": {"containers": [{"name": "video", "image": "facegrid:test"}]},
            "status": {"phase": "Running"},
        }
        await asyncio.to_thread(core.create_namespaced_pod, NAMESPACE, body, _preload_content=False)


async def until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def cluster(kmock: ApiServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    kmock.declare()
    url = str(kmock.url).rstrip("/")
    configuration = client.Configuration(host=url)
    k8s = client.ApiClient(configuration)
    apps = client.AppsV1Api(k8s)
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "facegrid-indexer", "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "serviceName": "facegrid-indexer",
            "selector": {"matchLabels": {"app": "indexer"}},
            "template": {"metadata": {"labels": {"app": "indexer"}}, "spec": {"containers": []}},
        },
    }
    for name in ("facegrid-indexer", "facegrid-indexer-r1"):  # primaries and one follower rank
        statefulset["metadata"]["name"] = name  # type: ignore[index]
        await asyncio.to_thread(
            apps.create_namespaced_stateful_set, NAMESPACE, statefulset, _preload_content=False
        )

    base = port_block(SHARDS)
    servers = []
    for i in range(SHARDS):
        settings = IndexerSettings(
            listen=f"127.0.0.1:{base + i}", data_dir=tmp_path / f"shard-{i}", metrics_listen=None
        )
        shard, service = indexer_main.build(settings, CollectorRegistry())
        server, _, _ = await grpcserver.start(service)
        servers.append((server, shard))

    template = tmp_path / "video-worker.yaml"
    template.write_text(yaml.safe_dump(TEMPLATE))
    listen = f"127.0.0.1:{free_port()}"
    settings = OperatorSettings(
        namespace=NAMESPACE,
        listen=listen,
        metrics_listen=None,
        indexer_port=base,
        indexer_port_stride=1,
        indexer_followers=1,
        shard_address="127.0.0.1:{port}",
        video_template=template,
        settle_seconds=0.2,
        stats_interval=1.0,
        peering="",
    )

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True)

    # The operator runs in a thread with its own event loop, as it would run in its own
    # process: kopf cancels every task started in its loop after it, the test's included.
    ready, stop = threading.Event(), threading.Event()
    registry = CollectorRegistry()
    thread = threading.Thread(
        target=lambda: asyncio.run(
            run(settings, k8s, login=login, ready=ready, stop=stop, registry=registry)
        ),
        name="operator",
    )
    thread.start()
    assert await asyncio.to_thread(ready.wait, 30), "the operator did not get ready"
    channels = [grpc.aio.insecure_channel(listen)] + [
        grpc.aio.insecure_channel(f"127.0.0.1:{base + i}") for i in range(SHARDS)
    ]
    yield Cluster(
        kmock,
        k8s,
        controlplane_pb2_grpc.ControlPlaneStub(channels[0]),
        [index_pb2_grpc.IndexShardStub(c) for c in channels[1:]],
        registry,
    )
    stop.set()
    await asyncio.to_thread(thread.join, 30)
    assert not thread.is_alive(), "the operator did not stop"
    for channel in channels:
        await channel.close()
    for server, shard in servers:
        await server.stop(None)
        shard.close()
    k8s.close()


def vectors(ids: list[int]) -> list[index_pb2.IndexEntry]:
    rng = np.random.default_rng(1)
    data = rng.standard_normal((len(ids), 128)).astype("<f4")
    return [index_pb2.IndexEntry(id=i, vector=v.tobytes()) for i, v in zip(ids, data, strict=True)]


async def ids_on(shard: index_pb2_grpc.IndexShardStub, gallery: str) -> set[int]:
    try:
        listed = await shard.List(index_pb2.ListRequest(gallery=gallery, limit=100_000))
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return set()
    return set(listed.ids)


async def test_galleries_through_controlplane_become_facegalleries(cluster: Cluster) -> None:
    default = await cluster.plane.GetPlacement(cp.GetPlacementRequest(gallery="default"))
    assert len(default.slot_shards) == SLOT_COUNT and len(default.shards) == 1

    created = await cluster.plane.CreateGallery(cp.CreateGalleryRequest(name="Entrance_1"))
    placement = created.placement
    assert [s.name for s in placement.shards] == ["facegrid-indexer-0"]
    assert set(placement.slot_shards) == {0}
    resources = [
        b
        for b in cluster.api.objects.values()
        if b.get("spec", {}).get("galleryName") == "Entrance_1"
    ]
    assert len(resources) == 1
    body = json.loads(json.dumps(resources[0].raw))
    name = body["metadata"]["name"]
    assert name.startswith("entrance-1-")  # not a DNS name: a readable stem and a hash
    assert body["status"]["placement"]["shards"][0]["slots"] == "0-1023"

    with pytest.raises(grpc.aio.AioRpcError) as again:
        await cluster.plane.CreateGallery(cp.CreateGalleryRequest(name="Entrance_1"))
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await cluster.plane.CreateGallery(cp.CreateGalleryRequest(name="no spaces"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = await cluster.plane.ListGalleries(cp.ListGalleriesRequest())
    assert {g.name for g in listed.galleries} == {"default", "Entrance_1"}

    # Deleting: the finalizer drops the vectors on the shards, then the resource goes.
    await cluster.shards[0].Add(
        index_pb2.AddRequest(gallery="Entrance_1", entries=vectors([1, 2, 3]))
    )
    await cluster.plane.DeleteGallery(cp.DeleteGalleryRequest(name="Entrance_1"))
    await until("the FaceGallery to go", lambda: cluster.object("facegalleries", name) is None)
    assert await ids_on(cluster.shards[0], "Entrance_1") == set()
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await cluster.plane.GetPlacement(cp.GetPlacementRequest(gallery="Entrance_1"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as kept:
        await cluster.plane.DeleteGallery(cp.DeleteGalleryRequest(name="default"))
    assert kept.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_facegallery_is_placed_and_the_indexer_scaled(cluster: Cluster) -> None:
    await cluster.create(
        "facegalleries",
        {
            "apiVersion": "facegrid.io/v1",
            "kind": "FaceGallery",
            "metadata": {"name": "staff"},
            "spec": {
                "shards": 3,
                "replicasPerShard": 2,
                "hnsw": {"m": 24, "efConstruction": 200, "efSearch": 64},
            },
        },
    )
    body = await until(
        "staff to be placed",
        lambda: (
            (b := cluster.object("facegalleries", "staff"))
            and (b.get("status") or {}).get("phase") == "Ready"
            and b
        ),
    )
    shards = body["status"]["placement"]["shards"]
    assert [(s["name"], s["slots"]) for s in shards] == [
        ("facegrid-indexer-0", "0-341"),
        ("facegrid-indexer-1", "342-682"),
        ("facegrid-indexer-2", "683-1023"),
    ]
    conditions = {c["type"]: c["status"] for c in body["status"]["conditions"]}
    assert conditions == {"Placed": "True", "Ready": "True", "Resharding": "False"}
    for name in ("facegrid-indexer", "facegrid-indexer-r1"):
        sts = cluster.object("statefulsets", name)
        assert sts is not None and sts["spec"]["replicas"] == 3, name
    # Two followers asked for, one rank deployed: each shard gets its one follower.
    assert all(len(s["replicas"]) == 1 for s in shards)
    # Its HNSW parameters are on every one of its shards.
    for i, shard in enumerate(cluster.shards):
        await shard.Add(index_pb2.AddRequest(gallery="staff", entries=vectors([10 + i])))

    async def params() -> set[tuple[int, int, int]]:
        found = set()
        for shard in cluster.shards:
            stats = await shard.Stats(index_pb2.StatsRequest())
            found |= {
                (g.m, g.ef_construction, g.ef_search) for g in stats.galleries if g.name == "staff"
            }
        return found

    assert await params() == {(24, 200, 64)}

    version = body["status"]["placement"]["version"]
    await cluster.patch(
        "facegalleries", "staff", {"spec": {"replicasPerShard": 0, "hnsw": {"efSearch": 32}}}
    )
    body = await until(
        "the followers to leave the placement",
        lambda: (
            (b := cluster.object("facegalleries", "staff"))
            and all(not s["replicas"] for s in b["status"]["placement"]["shards"])
            and b
        ),
    )
    assert body["status"]["placement"]["version"] == version + 1
    placement = await cluster.plane.GetPlacement(cp.GetPlacementRequest(gallery="staff"))
    assert placement.version == version + 1 and not any(s.replicas for s in placement.shards)
    assert await params() == {(24, 200, 32)}  # a merge patch keeps the other two


async def test_growing_shards_moves_slots_online(cluster: Cluster) -> None:
    watch = cluster.plane.WatchPlacements(cp.WatchPlacementsRequest())
    seen: list[cp.Placement] = []

    async def follow() -> None:
        async for event in watch:
            if event.placement.gallery == "growing":
                seen.append(event.placement)

    follower = asyncio.create_task(follow())
    await cluster.create(
        "facegalleries",
        {
            "apiVersion": "facegrid.io/v1",
            "kind": "FaceGallery",
            "metadata": {"name": "growing"},
            "spec": {"shards": 1},
        },
    )
    await until(
        "growing to be placed",
        lambda: (
            ((cluster.object("facegalleries", "growing") or {}).get("status") or {}).get("phase")
            == "Ready"
        ),
    )
    ids = list(range(1, 2001))
    await cluster.shards[0].Add(index_pb2.AddRequest(gallery="growing", entries=vectors(ids)))

    await cluster.patch("facegalleries", "growing", {"spec": {"shards": 3}})
    body = await until(
        "the reshard to finish",
        lambda: (
            (b := cluster.object("facegalleries", "growing"))
            and len(b["status"]["placement"]["shards"]) == 3
            and not b["status"].get("resharding")
            and b["status"].get("phase") == "Ready"
            and b
        ),
        timeout=40,
    )
    # Status showed each stage and the copy's progress on the way.
    stages = [
        (h.get("status") or {}).get("resharding") or {}
        for h in cluster.history("facegalleries", "growing")
    ]
    named = [s.get("stage") for s in stages if s.get("stage")]
    for stage in ("DualWrite", "Copy", "Verify", "Cleanup"):
        assert stage in named
    moved = [s["slotsMoved"] for s in stages if s.get("stage") == "Copy"]
    totals = {s["slotsTotal"] for s in stages if s.get("stage")}
    assert totals == {682}  # 1024 - 342 slots stay on the first shard
    assert moved == sorted(moved) and moved[0] == 0 and moved[-1] == 682

    # Every face is now exactly on its slot's shard.
    owners: list[str] = []
    for block in body["status"]["placement"]["shards"]:
        for part in block["slots"].split(","):
            first, _, last = part.partition("-")
            owners.extend([block["name"]] * (int(last or first) - int(first) + 1))
    where: dict[int, list[int]] = {}
    for i, shard in enumerate(cluster.shards):
        for face_id in await ids_on(shard, "growing"):
            where.setdefault(face_id, []).append(i)
    assert set(where) == set(ids)
    assert all(len(s) == 1 for s in where.values())
    moved_faces = sum(1 for s in where.values() if s != [0])
    assert cluster.metric("facegrid_operator_reshard_faces_copied_total", gallery="growing") == (
        moved_faces
    )
    assert cluster.metric("facegrid_operator_reshard_slots_remaining", gallery="growing") == 0
    assert all(owners[slot_of(f)] == f"facegrid-indexer-{s[0]}" for f, s in where.items())
    # Gateways were told: a placement with a target (dual writes), then the new one.
    await until("the cut-over to be published", lambda: seen and len(seen[-1].shards) == 3)
    assert any(p.target_slot_shards for p in seen)
    assert not seen[-1].target_slot_shards
    assert [p.version for p in seen] == sorted(p.version for p in seen)
    follower.cancel()

    # ... and so was `kubectl describe`: Kubernetes events on the FaceGallery.
    def reasons() -> set[str]:
        return {
            str(obj.raw.get("reason"))
            for (resource, _, _), obj in cluster.api.objects.items()
            if resource.plural == "events"
            and not obj.deleted
            and obj.raw.get("involvedObject", {}).get("name") == "growing"
        }

    await until("the reshard's events", lambda: {"Resharding", "Resharded"} <= reasons())
    sts = cluster.object("statefulsets", "facegrid-indexer")
    assert sts is not None and sts["spec"]["replicas"] == 3


async def test_cameras_get_worker_pods_and_follow_them(cluster: Cluster) -> None:
    created = [
        await cluster.plane.CreateCamera(
            cp.CreateCameraRequest(
                url=f"rtsp://camera-{i}/stream", detector="entrance", meta=f"door {i}", active=True
            )
        )
        for i in range(5)
    ]
    ids = {c.id for c in created}
    deployment = await until(
        "the pool's Deployment",
        lambda: (
            (d := cluster.object("deployments", "facegrid-video-entrance"))
            and d["spec"]["replicas"] == 3
            and d
        ),
    )
    env = {
        e["name"]: e["value"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["FACEGRID_VIDEO_DETECTOR_NAME"] == "entrance"
    assert env["FACEGRID_VIDEO_DETECTORS_MAX"] == "2"
    await until(
        "the pool's size in /metrics",
        lambda: cluster.metric("facegrid_operator_pool_workers", pool="entrance") == 3,
    )

    def phases() -> dict[str, tuple[str, str]]:
        out = {}
        for i in ids:
            status = (cluster.object("cameras", i) or {}).get("status") or {}
            out[i] = (status.get("phase", ""), status.get("workerPod") or "")
        return out

    await until(
        "cameras to wait for pods", lambda: all(p == "Pending" for p, _ in phases().values())
    )
    for i in range(3):
        await cluster.pod(f"video-entrance-{i}", "entrance")
    assigned = await until(
        "every camera assigned",
        lambda: (p := phases()) and all(phase == "Assigned" for phase, _ in p.values()) and p,
    )
    load: dict[str, int] = {}
    for _, pod in assigned.values():
        load[pod] = load.get(pod, 0) + 1
    assert sorted(load.values()) == [1, 2, 2]
    mine = await cluster.plane.ListCameras(
        cp.ListCamerasRequest(detector="entrance", worker="video-entrance-0")
    )
    assert {c.id for c in mine.cameras} == {
        i for i, (_, p) in assigned.items() if p == "video-entrance-0"
    }

    # Workers report how their cameras do; Camera status shows it (kubectl get fcam).
    camera, pod = next((i, p) for i, (_, p) in assigned.items())
    other = next(p for p in load if p != pod)
    await cluster.plane.ReportCameras(
        cp.ReportCamerasRequest(
            worker=other,  # not its worker: a stale report, ignored
            cameras=[cp.CameraReport(id=camera, streaming=False, frames_per_second=1.0)],
        )
    )
    report = cp.CameraReport(id=camera, streaming=True, frames_per_second=24.96, posts=7)
    report.last_post.FromDatetime(dt.datetime(2026, 11, 28, 12, 0, 5, tzinfo=dt.UTC))
    await cluster.plane.ReportCameras(cp.ReportCamerasRequest(worker=pod, cameras=[report]))
    status = await until(
        "the camera to show its stream",
        lambda: (
            (st := (cluster.object("cameras", camera) or {}).get("status") or {}).get("phase")
            == "Streaming"
            and st
        ),
    )
    assert status["framesPerSecond"] == 25.0 and status["posts"] == 7
    assert status["lastPostTime"] == "2026-11-28T12:00:05Z" and status["workerPod"] == pod
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Assigned": "True",
        "Streaming": "True",
        "Licensed": "True",
    }
    # Past the licence's camera limit the worker refuses it: Refused, Licensed False.
    refusal = cp.CameraRefusal(id=camera, licence=True, reason="8 of 8 cameras leased")
    await cluster.plane.ReportCameras(cp.ReportCamerasRequest(worker=pod, refused=[refusal]))
    status = await until(
        "the refusal to show",
        lambda: (
            (st := (cluster.object("cameras", camera) or {}).get("status") or {}).get("phase")
            == "Refused"
            and st
        ),
    )
    licensed = next(c for c in status["conditions"] if c["type"] == "Licensed")
    assert (licensed["status"], licensed["reason"]) == ("False", "LicenceLimit")
    assert licensed["message"] == "8 of 8 cameras leased"
    await cluster.plane.ReportCameras(cp.ReportCamerasRequest(worker=pod, cameras=[report]))
    await until(
        "the camera to stream again",
        lambda: (
            ((cluster.object("cameras", camera) or {}).get("status") or {}).get("phase")
            == "Streaming"
        ),
    )
    assigned[camera] = ("Streaming", pod)

    # A pod goes: its cameras move to the others while they have room; the rest wait.
    busiest = max(load, key=lambda p: load[p])
    await cluster.pod(busiest, "entrance", delete=True)
    after = await until(
        "cameras to leave the gone pod",
        lambda: (p := phases()) and all(pod != busiest for _, pod in p.values()) and p,
    )
    stayed = [i for i, (_, pod) in assigned.items() if pod != busiest]
    assert all(after[i] == assigned[i] for i in stayed)
    assert sum(1 for phase, _ in after.values() if phase == "Pending") == 1
    await until(
        "the waiting camera in /metrics",
        lambda: cluster.metric("facegrid_operator_pool_cameras_waiting", pool="entrance") == 1,
    )

    # A Camera's own options reach its worker, in the worker's option names.
    await cluster.create(
        "cameras",
        {
            "apiVersion": "facegrid.io/v1",
            "kind": "Camera",
            "metadata": {"name": "lobby"},
            "spec": {
                "url": "rtsp://lobby/stream",
                "detector": "lobby",
                "options": {"minScore": -3.5, "realtime": True, "body": {"floor": "2"}},
            },
        },
    )
    await until(
        "the lobby camera to wait for a worker",
        lambda: (
            ((cluster.object("cameras", "lobby") or {}).get("status") or {}).get("phase")
            == "Pending"
        ),
    )
    listed = await cluster.plane.ListCameras(cp.ListCamerasRequest(detector="lobby"))
    assert dict(listed.cameras[0].options) == {
        "min_score": "-3.5",
        "realtime": "true",
        "body": "floor=2",
    }
    created.append(listed.cameras[0])

    # Deleting every camera removes the pools' Deployments.
    for camera in created:
        await cluster.plane.DeleteCamera(cp.DeleteCameraRequest(id=camera.id))
    await until(
        "the Deployments to go",
        lambda: (
            cluster.object("deployments", "facegrid-video-entrance") is None
            and cluster.object("deployments", "facegrid-video-lobby") is None
        ),
    )
