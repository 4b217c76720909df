"""Cameras: the regions the seed lets a client set on one, and what a change may touch."""

from __future__ import annotations

from dataclasses import dataclass

from facegrid.operator.core.placement import InvalidRequest

MAX_SIDE = 65535


@dataclass(frozen=True)
class Region:
    """[W, H, X, Y]: a width and height, then the left and top edges, in pixels."""

    width: int
    height: int
    x: int
    y: int

    def __post_init__(self) -> None:
        if not (0 < self.width <= MAX_SIDE and 0 < self.height <= MAX_SIDE):
            raise InvalidRequest(f"a region needs a width and height of 1..{MAX_SIDE}: {self}")
        if not (0 <= self.x <= MAX_SIDE and 0 <= self.y <= MAX_SIDE):
            raise InvalidRequest(f"a region's x and y must be within 0..{MAX_SIDE}: {self}")

    def as_list(self) -> list[int]:
        return [self.width, self.height, self.x, self.y]


@dataclass(frozen=True)
class CameraChange:
    """A camera update: None leaves a field alone, except rot and roi, which are replaced
    (None removes them) as the seed's PUT /camera does."""

    url: str | None = None
    detector: str | None = None
    meta: str | None = None
    active: bool | None = None
    rot: Region | None = None
    roi: Region | None = None
