"""The gateway's ports implemented over the real backends: gRPC services and MongoDB."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pymongo import AsyncMongoClient, MongoClient, WriteConcern
from pymongo.errors import PyMongoError

from facegrid.gateway.core.cameras import Camera, CameraFields, Region
from facegrid.gateway.core.errors import (
    AlreadyExists,
    ApiError,
    BadParam,
    Forbidden,
    NotFound,
    ServiceUnavailable,
)
from facegrid.gateway.core.tokens import new_token, token_digest
from facegrid.gateway.timing import timed
from facegrid.v1 import controlplane_pb2 as cp
from facegrid.v1 import controlplane_pb2_grpc

# Tokens remembered as valid at once; past this the memory is cleared (a flood of tokens).
MAX_REMEMBERED_TOKENS = 10_000

_FROM_GRPC: dict[grpc.StatusCode, type[ApiError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: BadParam,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: Forbidden,
}


def api_error(service: str, error: grpc.aio.AioRpcError, **context: Any) -> ApiError:
    """A backend's gRPC status as the REST error a client should see."""
    kind = _FROM_GRPC.get(error.code())
    if kind is None:
        return ServiceUnavailable(f"{service} failed: {error.code().name} {error.details()}")
    return kind(error.details() or error.code().name, **context)


class ControlPlaneDirectory:
    """GalleryDirectory over the ControlPlane contract."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
        self._timeout = timeout

    async def list_galleries(self) -> list[str]:
        try:
            response = await self._stub.ListGalleries(
                cp.ListGalleriesRequest(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            raise api_error("control plane", e) from e
        return [g.name for g in response.galleries]

    async def create_gallery(self, name: str) -> None:
        try:
            await self._stub.CreateGallery(
                cp.CreateGalleryRequest(name=name), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            raise api_error("control plane", e, param="gallery", value=name) from e

    async def delete_gallery(self, name: str) -> None:
        try:
            await self._stub.DeleteGallery(
                cp.DeleteGalleryRequest(name=name), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            raise api_error("control plane", e, param="gallery", value=name) from e


def _camera(message: cp.Camera) -> Camera:
    def region(name: str) -> Region | None:
        if not message.HasField(name):  # type: ignore[arg-type]
            return None
        r = getattr(message, name)
        return (r.width, r.height, r.x, r.y)

    return Camera(
        message.id,
        message.url,
        message.detector,
        message.meta,
        message.active,
        region("rot"),
        region("roi"),
        _camera_status(message.status) if message.HasField("status") else None,
    )


def _camera_status(status: cp.CameraStatus) -> dict[str, Any]:
    body: dict[str, Any] = {
        "phase": status.phase,
        "worker": status.worker,
        "frames_per_second": round(status.frames_per_second, 1),
        "posts": status.posts,
    }
    if status.reason:
        body["reason"] = status.reason
    for name in ("last_post", "reported_at"):
        if status.HasField(name):
            when = getattr(status, name).ToDatetime(dt.UTC)
            body[name] = when.isoformat(timespec="seconds")
    return body


def _wire_region(region: Region | None) -> cp.Region | None:
    if region is None:
        return None
    width, height, x, y = region
    return cp.Region(width=width, height=height, x=x, y=y)


class ControlPlaneCameras:
    """CameraDirectory over the ControlPlane contract."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
        self._timeout = timeout

    async def _call(self, method: str, request: Any, **context: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as e:
            raise api_error("control plane", e, **context) from e

    async def create(self, fields: CameraFields) -> Camera:
        request = cp.CreateCameraRequest(
            url=fields.url or "",
            detector=fields.detector or "",
            meta=fields.meta or "",
            active=True if fields.active is None else fields.active,
            rot=_wire_region(fields.rot),
            roi=_wire_region(fields.roi),
        )
        return _camera(await self._call("CreateCamera", request))

    async def get(self, camera_id: str) -> Camera:
        request = cp.GetCameraRequest(id=camera_id)
        return _camera(await self._call("GetCamera", request, param="id", value=camera_id))

    async def list(self) -> list[Camera]:
        response = await self._call("ListCameras", cp.ListCamerasRequest())
        return [_camera(c) for c in response.cameras]

    async def update(self, camera_id: str, fields: CameraFields) -> Camera:
        request = cp.UpdateCameraRequest(
            id=camera_id, rot=_wire_region(fields.rot), roi=_wire_region(fields.roi)
        )
        for name in ("url", "detector", "meta", "active"):
            value = getattr(fields, name)
            if value is not None:
                setattr(request, name, value)
        return _camera(await self._call("UpdateCamera", request, param="id", value=camera_id))

    async def delete(self, camera_id: str) -> None:
        request = cp.DeleteCameraRequest(id=camera_id)
        await self._call("DeleteCamera", request, param="id", value=camera_id)


class MongoTokenStore:
    """Token digests in MongoDB. A token found there is remembered for `remember` seconds, so
    a client's requests do not each wait on the database; unknown tokens are always looked up
    (a new token works at once), and a deleted one stops working within `remember`."""

    def __init__(
        self,
        client: AsyncMongoClient[dict[str, Any]],
        db: str,
        remember: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens = client[db].tokens
        self._remember = remember
        self._clock = clock
        self._known: dict[str, float] = {}  # digest -> when to look it up again

    async def exists(self, token: str) -> bool:
        digest = token_digest(token)
        now = self._clock()
        if self._known.get(digest, 0.0) > now:
            return True
        try:
            async with timed("db"):
                found = await self._tokens.find_one({"_id": digest}, {"_id": 1})
        except PyMongoError as e:
            raise ServiceUnavailable(f"token store unavailable: {e}") from e
        if found is None:
            self._known.pop(digest, None)
            return False
        if len(self._known) >= MAX_REMEMBERED_TOKENS:
            self._known.clear()
        self._known[digest] = now + self._remember
        return True


def create_token(mongo_uri: str, db: str, *, short: bool = False, note: str = "") -> str:
    """Store a new API token's digest and return the token (the seed's
    `findface-facenapi.token`); it cannot be read back from the database later."""
    token = new_token(short)
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=10_000)
    with client:
        client[db].get_collection("tokens", write_concern=WriteConcern(w=1, j=True)).insert_one(
            {"_id": token_digest(token), "created_at": dt.datetime.now(dt.UTC), "note": note}
        )
    return token


def kept_token(mongo_uri: str, db: str, saved: str | None, note: str) -> str:
    """`saved` if it is still a valid token, else a new one (used by `facegrid up`, which keeps
    its token in its data folder because the database only has digests)."""
    if saved:
        client: MongoClient[dict[str, Any]] = MongoClient(
            mongo_uri, serverSelectionTimeoutMS=10_000
        )
        with client:
            if client[db].tokens.find_one({"_id": token_digest(saved)}) is not None:
                return saved
    return create_token(mongo_uri, db, note=note)


async def grpc_serving(channel: grpc.aio.Channel, timeout: float) -> bool:
    try:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
