"""The local control plane over gRPC, on MongoDB, with a real index shard behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from facegrid.operator.core.placement import SLOT_COUNT
from facegrid.v1 import controlplane_pb2 as cp
from facegrid.v1 import controlplane_pb2_grpc, index_pb2, index_pb2_grpc


@pytest.fixture
async def plane(controlplane_address: str) -> AsyncIterator[controlplane_pb2_grpc.ControlPlaneStub]:
    async with grpc.aio.insecure_channel(controlplane_address) as channel:
        yield controlplane_pb2_grpc.ControlPlaneStub(channel)


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value.code()


async def test_default_gallery_exists_and_is_placed(
    plane: controlplane_pb2_grpc.ControlPlaneStub, indexer_address: str
) -> None:
    listed = await plane.ListGalleries(cp.ListGalleriesRequest())
    assert [g.name for g in listed.galleries] == ["default"]
    placement = listed.galleries[0].placement
    assert placement.slot_count == SLOT_COUNT
    assert len(placement.slot_shards) == SLOT_COUNT
    assert [(s.name, s.address) for s in placement.shards] == [("shard-0", indexer_address)]


async def test_gallery_lifecycle(plane: controlplane_pb2_grpc.ControlPlaneStub) -> None:
    created = await plane.CreateGallery(cp.CreateGalleryRequest(name="testgal"))
    assert created.name == "testgal"
    assert created.created_at.seconds > 0
    got = await plane.GetGallery(cp.GetGalleryRequest(name="testgal"))
    assert got.placement == created.placement
    assert await _code(plane.CreateGallery(cp.CreateGalleryRequest(name="testgal"))) == (
        grpc.StatusCode.ALREADY_EXISTS
    )
    assert await _code(plane.CreateGallery(cp.CreateGalleryRequest(name="bad name"))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    await plane.DeleteGallery(cp.DeleteGalleryRequest(name="testgal"))
    assert await _code(plane.GetGallery(cp.GetGalleryRequest(name="testgal"))) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert await _code(plane.DeleteGallery(cp.DeleteGalleryRequest(name="testgal"))) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert await _code(plane.DeleteGallery(cp.DeleteGalleryRequest(name="default"))) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )


async def test_deleting_a_gallery_drops_its_vectors_on_the_shard(
    plane: controlplane_pb2_grpc.ControlPlaneStub, indexer_address: str
) -> None:
    await plane.CreateGallery(cp.CreateGalleryRequest(name="doomed"))
    async with grpc.aio.insecure_channel(indexer_address) as channel:
        shard = index_pb2_grpc.IndexShardStub(channel)
        vector = np.ones(8, "<f4").tobytes()
        await shard.Add(
            index_pb2.AddRequest(
                gallery="doomed", entries=[index_pb2.IndexEntry(id=1, vector=vector)]
            )
        )
        await plane.DeleteGallery(cp.DeleteGalleryRequest(name="doomed"))
        stats = await shard.Stats(index_pb2.StatsRequest())
        assert [g.name for g in stats.galleries] == []


async def test_watch_replays_then_follows(plane: controlplane_pb2_grpc.ControlPlaneStub) -> None:
    stream = plane.WatchPlacements(cp.WatchPlacementsRequest())
    first = await asyncio.wait_for(stream.read(), 5)
    assert (first.kind, first.placement.gallery) == (cp.PlacementEvent.UPSERTED, "default")
    await plane.CreateGallery(cp.CreateGalleryRequest(name="watched"))
    created = await asyncio.wait_for(stream.read(), 5)
    assert (created.kind, created.placement.gallery) == (cp.PlacementEvent.UPSERTED, "watched")
    await plane.DeleteGallery(cp.DeleteGalleryRequest(name="watched"))
    deleted = await asyncio.wait_for(stream.read(), 5)
    assert (deleted.kind, deleted.placement.gallery) == (cp.PlacementEvent.DELETED, "watched")
    stream.cancel()


async def test_camera_lifecycle(plane: controlplane_pb2_grpc.ControlPlaneStub) -> None:
    camera = await plane.CreateCamera(
        cp.CreateCameraRequest(url="rtsp://cam/1", detector="detec1", meta="door", active=True)
    )
    assert len(camera.id) == 36
    await plane.CreateCamera(cp.CreateCameraRequest(url="file@25:/v.mp4", detector="other"))
    mine = await plane.ListCameras(cp.ListCamerasRequest(detector="detec1"))
    assert [c.id for c in mine.cameras] == [camera.id]
    everything = await plane.ListCameras(cp.ListCamerasRequest())
    assert len(everything.cameras) == 2
    assert (await plane.GetCamera(cp.GetCameraRequest(id=camera.id))).meta == "door"
    await plane.DeleteCamera(cp.DeleteCameraRequest(id=camera.id))
    assert await _code(plane.GetCamera(cp.GetCameraRequest(id=camera.id))) == (
        grpc.StatusCode.NOT_FOUND
    )
    bad_region = cp.CreateCameraRequest(url="rtsp://x", rot=cp.Region(width=0, height=5))
    assert await _code(plane.CreateCamera(bad_region)) == grpc.StatusCode.INVALID_ARGUMENT
    # A camera without a stream: an external detector posts its faces.
    assert (await plane.CreateCamera(cp.CreateCameraRequest(detector="ext"))).url == ""


async def test_camera_updates_keep_fields_but_replace_regions(controlplane_address: str) -> None:
    async with grpc.aio.insecure_channel(controlplane_address) as channel:
        plane = controlplane_pb2_grpc.ControlPlaneStub(channel)
        created = await plane.CreateCamera(
            cp.CreateCameraRequest(
                url="rtsp://cam/1",
                meta="door",
                rot=cp.Region(width=120, height=120, x=35, y=50),
                roi=cp.Region(width=100, height=100, x=40, y=50),
            )
        )
        assert created.HasField("rot") and created.roi.width == 100
        moved = await plane.UpdateCamera(
            cp.UpdateCameraRequest(id=created.id, url="rtsp://cam/2", roi=created.roi)
        )
        assert (moved.url, moved.meta) == ("rtsp://cam/2", "door")
        assert not moved.HasField("rot")  # left out of the PUT: removed, as in the seed
        assert moved.roi == created.roi
        read = await plane.GetCamera(cp.GetCameraRequest(id=created.id))
        assert read == moved
        missing = plane.UpdateCamera(cp.UpdateCameraRequest(id="nope"))
        assert await _code(missing) == grpc.StatusCode.NOT_FOUND
