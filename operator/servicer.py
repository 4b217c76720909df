"""ControlPlane over gRPC: wire types to domain calls and back.

Both control planes serve it: the local one (MongoDB, one machine) and the operator's
(FaceGallery and Camera resources, Kubernetes). `Plane` is what each provides.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable
from typing import Protocol, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from facegrid.grpcserver import Context, StatusTable, abort_with
from facegrid.operator.core.cameras import CameraChange, Region
from facegrid.operator.core.placement import (
    AlreadyExists,
    ControlPlaneError,
    InvalidRequest,
    NotFound,
    Placement,
    Refused,
    Unavailable,
)
from facegrid.operator.core.records import (
    CameraRecord,
    CameraRefusal,
    CameraState,
    GalleryRecord,
    PlacementChange,
)
from facegrid.v1 import controlplane_pb2 as pb
from facegrid.v1 import controlplane_pb2_grpc

T = TypeVar("T")


class Plane(Protocol):
    async def create_gallery(self, name: str) -> GalleryRecord: ...
    async def get_gallery(self, name: str) -> GalleryRecord: ...
    async def list_galleries(self) -> list[GalleryRecord]: ...
    async def delete_gallery(self, name: str) -> None: ...
    async def placement(self, gallery: str) -> Placement: ...
    def watch(self) -> AsyncIterator[PlacementChange]: ...
    async def create_camera(
        self,
        url: str,
        detector: str,
        meta: str,
        active: bool,
        rot: Region | None = None,
        roi: Region | None = None,
    ) -> CameraRecord: ...
    async def update_camera(self, camera_id: str, change: CameraChange) -> CameraRecord: ...
    async def get_camera(self, camera_id: str) -> CameraRecord: ...
    async def list_cameras(self, detector: str, worker: str = "") -> list[CameraRecord]: ...
    async def delete_camera(self, camera_id: str) -> None: ...
    async def report_cameras(
        self, worker: str, states: list[CameraState], refused: list[CameraRefusal]
    ) -> None: ...


_STATUS: StatusTable = [
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Refused, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
]


async def _call(context: Context, awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except ControlPlaneError as e:
        await abort_with(context, e, _STATUS)


def _timestamp(when: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def placement_to_wire(p: Placement) -> pb.Placement:
    return pb.Placement(
        gallery=p.gallery,
        version=p.version,
        slot_count=len(p.slot_shards),
        shards=[pb.Shard(name=s.name, address=s.address, replicas=s.replicas) for s in p.shards],
        slot_shards=p.slot_shards,
        target_slot_shards=p.target,
    )


def _gallery(g: GalleryRecord) -> pb.Gallery:
    return pb.Gallery(
        name=g.name, created_at=_timestamp(g.created_at), placement=placement_to_wire(g.placement)
    )


def _camera(c: CameraRecord) -> pb.Camera:
    camera = pb.Camera(
        id=c.id,
        url=c.url,
        detector=c.detector,
        meta=c.meta,
        active=c.active,
        created_at=_timestamp(c.created_at),
        options=dict(c.options),
    )
    if c.status is not None:
        status = pb.CameraStatus(
            phase=c.status.phase,
            worker=c.status.worker,
            frames_per_second=c.status.frames_per_second,
            posts=c.status.posts,
            reason=c.status.reason,
        )
        if c.status.last_post is not None:
            status.last_post.CopyFrom(_timestamp(c.status.last_post))
        if c.status.reported_at is not None:
            status.reported_at.CopyFrom(_timestamp(c.status.reported_at))
        camera.status.CopyFrom(status)
    if c.rot is not None:
        camera.rot.CopyFrom(_wire_region(c.rot))
    if c.roi is not None:
        camera.roi.CopyFrom(_wire_region(c.roi))
    return camera


def _wire_region(r: Region) -> pb.Region:
    return pb.Region(width=r.width, height=r.height, x=r.x, y=r.y)


def _region(message: pb.CreateCameraRequest | pb.UpdateCameraRequest, name: str) -> Region | None:
    if not message.HasField(name):  # type: ignore[arg-type]
        return None
    r = getattr(message, name)
    return Region(r.width, r.height, r.x, r.y)


class ControlPlaneServicer(controlplane_pb2_grpc.ControlPlaneServicer):
    def __init__(self, plane: Plane) -> None:
        self._plane = plane

    async def CreateGallery(self, request: pb.CreateGalleryRequest, context: Context) -> pb.Gallery:
        return _gallery(await _call(context, self._plane.create_gallery(request.name)))

    async def GetGallery(self, request: pb.GetGalleryRequest, context: Context) -> pb.Gallery:
        return _gallery(await _call(context, self._plane.get_gallery(request.name)))

    async def ListGalleries(
        self, request: pb.ListGalleriesRequest, context: Context
    ) -> pb.ListGalleriesResponse:
        galleries = await _call(context, self._plane.list_galleries())
        return pb.ListGalleriesResponse(galleries=[_gallery(g) for g in galleries])

    async def DeleteGallery(
        self, request: pb.DeleteGalleryRequest, context: Context
    ) -> pb.DeleteGalleryResponse:
        await _call(context, self._plane.delete_gallery(request.name))
        return pb.DeleteGalleryResponse()

    async def CreateCamera(self, request: pb.CreateCameraRequest, context: Context) -> pb.Camera:
        async def create() -> CameraRecord:
            return await self._plane.create_camera(
                request.url,
                request.detector,
                request.meta,
                request.active,
                _region(request, "rot"),
                _region(request, "roi"),
            )

        return _camera(await _call(context, create()))

    async def UpdateCamera(self, request: pb.UpdateCameraRequest, context: Context) -> pb.Camera:
        async def update() -> CameraRecord:
            change = CameraChange(
                url=request.url if request.HasField("url") else None,
                detector=request.detector if request.HasField("detector") else None,
                meta=request.meta if request.HasField("meta") else None,
                active=request.active if request.HasField("active") else None,
                rot=_region(request, "rot"),
                roi=_region(request, "roi"),
            )
            return await self._plane.update_camera(request.id, change)

        return _camera(await _call(context, update()))

    async def GetCamera(self, request: pb.GetCameraRequest, context: Context) -> pb.Camera:
        return _camera(await _call(context, self._plane.get_camera(request.id)))

    async def ListCameras(
        self, request: pb.ListCamerasRequest, context: Context
    ) -> pb.ListCamerasResponse:
        cameras = await _call(context, self._plane.list_cameras(request.detector, request.worker))
        return pb.ListCamerasResponse(cameras=[_camera(c) for c in cameras])

    async def DeleteCamera(
        self, request: pb.DeleteCameraRequest, context: Context
    ) -> pb.DeleteCameraResponse:
        await _call(context, self._plane.delete_camera(request.id))
        return pb.DeleteCameraResponse()

    async def ReportCameras(
        self, request: pb.ReportCamerasRequest, context: Context
    ) -> pb.ReportCamerasResponse:
        states = [
            CameraState(
                id=c.id,
                streaming=c.streaming,
                frames_per_second=c.frames_per_second,
                posts=c.posts,
                last_post=c.last_post.ToDatetime(dt.UTC) if c.HasField("last_post") else None,
            )
            for c in request.cameras
        ]
        refused = [CameraRefusal(r.id, r.licence, r.reason) for r in request.refused]
        await _call(context, self._plane.report_cameras(request.worker, states, refused))
        return pb.ReportCamerasResponse()

    async def GetPlacement(self, request: pb.GetPlacementRequest, context: Context) -> pb.Placement:
        return placement_to_wire(await _call(context, self._plane.placement(request.gallery)))

    async def WatchPlacements(
        self, request: pb.WatchPlacementsRequest, context: Context
    ) -> AsyncIterator[pb.PlacementEvent]:
        try:
            async for change in self._plane.watch():
                kind = pb.PlacementEvent.DELETED if change.deleted else pb.PlacementEvent.UPSERTED
                yield pb.PlacementEvent(kind=kind, placement=placement_to_wire(change.placement))
        except ControlPlaneError as e:
            await abort_with(context, e, _STATUS)
