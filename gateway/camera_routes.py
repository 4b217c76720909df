"""Routes for /camera: the cameras video workers process, kept by the control plane."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from facegrid.gateway import openapi as doc
from facegrid.gateway.core.cameras import CameraDirectory, CameraFields, parse_region, parse_text
from facegrid.gateway.core.model import parse_bool
from facegrid.gateway.core.ports import Quota
from facegrid.gateway.face_routes import Registrar
from facegrid.gateway.params import Params, read_params


def _fields(params: Params) -> CameraFields:
    active = params.get("active")
    return CameraFields(
        url=parse_text(params.get("url"), "url"),
        detector=parse_text(params.get("detector"), "detector", 256),
        meta=parse_text(params.get("meta"), "meta"),
        active=None if active is None else parse_bool(active, "active"),
        rot=parse_region(params.get("rot"), "rot"),
        roi=parse_region(params.get("roi"), "roi"),
    )


def register(route: Registrar, cameras: CameraDirectory, quota: Quota) -> None:
    """quota: the licence's cameras limit, taken before a camera is created."""

    @route(
        "/camera",
        "POST",
        status_code=201,
        summary="Create a camera",
        openapi_extra=doc.body(doc.CAMERA),
    )
    async def create_camera(request: Request) -> JSONResponse:
        fields = _fields(await read_params(request))
        await quota.reserve(1)
        camera = await cameras.create(fields)
        return JSONResponse(camera.as_dict(), status_code=201)

    @route("/camera", "GET", summary="All cameras")
    async def list_cameras() -> list[dict[str, Any]]:
        return [c.as_dict() for c in await cameras.list()]

    @route("/camera/{camera_id}", "GET", summary="One camera")
    async def get_camera(camera_id: str) -> dict[str, Any]:
        return (await cameras.get(camera_id)).as_dict()

    @route(
        "/camera/{camera_id}",
        "PUT",
        summary="Change a camera (rot and roi are replaced: leave them out to remove them)",
        openapi_extra=doc.body(doc.CAMERA),
    )
    async def update_camera(request: Request, camera_id: str) -> dict[str, Any]:
        fields = _fields(await read_params(request))
        return (await cameras.update(camera_id, fields)).as_dict()

    @route(
        "/camera/{camera_id}",
        "DELETE",
        status_code=204,
        response_class=Response,
        summary="Delete a camera",
    )
    async def delete_camera(camera_id: str) -> Response:
        await cameras.delete(camera_id)
        return Response(status_code=204)
