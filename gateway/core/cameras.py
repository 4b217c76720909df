"""Cameras behind /camera, over a CameraDirectory port (the control plane in production).

A region is the seed's [W, H, X, Y]. On PUT, meta, url and detector change only when given,
while rot and roi are replaced: left out or empty, they are removed, as the seed documents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from facegrid.gateway.core.errors import BadParam

Region = tuple[int, int, int, int]
MAX_SIDE = 65535


@dataclass(frozen=True)
class Camera:
    id: str
    url: str
    detector: str
    meta: str
    active: bool
    rot: Region | None = None
    roi: Region | None = None
    # FaceGrid's own, beyond the seed's fields: what the camera's video worker last reported
    # (phase, frames_per_second, posts, ...); None until one has.
    status: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "detector": self.detector,
            "meta": self.meta,
            "active": self.active,
        }
        if self.rot is not None:
            body["rot"] = list(self.rot)
        if self.roi is not None:
            body["roi"] = list(self.roi)
        if self.status is not None:
            body["status"] = self.status
        return body


@dataclass(frozen=True)
class CameraFields:
    url: str | None = None
    detector: str | None = None
    meta: str | None = None
    active: bool | None = None
    rot: Region | None = None
    roi: Region | None = None


class CameraDirectory(Protocol):
    async def create(self, fields: CameraFields) -> Camera: ...

    async def get(self, camera_id: str) -> Camera: ...

    async def list(self) -> list[Camera]: ...

    async def update(self, camera_id: str, fields: CameraFields) -> Camera: ...

    async def delete(self, camera_id: str) -> None: ...


def parse_region(value: Any, param: str) -> Region | None:
    """[W, H, X, Y] as an array or JSON text; empty means none."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadParam(f"{param} must be [W, H, X, Y]", param=param, value=value) from None
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise BadParam(f"{param} must be [W, H, X, Y] in pixels", param=param, value=value)
    width, height, x, y = value
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and x >= 0 and y >= 0):
        raise BadParam(
            f"{param} needs a positive width and height and a non-negative x and y",
            param=param,
            value=value,
        )
    return (width, height, x, y)


def parse_text(value: Any, param: str, limit: int = 2048) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadParam(f"{param} must be a string of at most {limit} characters", param=param)
    return value
