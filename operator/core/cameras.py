"""Cameras: the regions the seed lets a client set on one, and what a change may touch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from facegrid.operator.core.balance import spread_evenly
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


def workers_needed(cameras: int, detectors_max: int) -> int:
    """Worker pods a detector pool needs: ceil(cameras / detectors-max)."""
    if detectors_max < 1:
        raise ValueError("detectors-max must be at least 1")
    return -(-cameras // detectors_max)


def assign(
    cameras: Sequence[str],
    workers: Sequence[str],
    current: Mapping[str, str],
    detectors_max: int,
) -> dict[str, str | None]:
    """Each camera's worker pod, or None when the pool has no room for it.

    Cameras stay where they are while their worker lives and holds no more than its share;
    the shares are even (they differ by at most one) and never above `detectors_max`. When
    there is not room for all, cameras already on a live worker keep theirs, and the others
    are taken in name order, so the ones left waiting are always the same.
    """
    ordered = sorted(set(cameras))
    room = min(len(ordered), len(workers) * detectors_max)
    alive = set(workers)
    placed = sorted(ordered, key=lambda c: (current.get(c) not in alive, c))[:room]
    result: dict[str, str | None] = dict.fromkeys(ordered)
    if placed:
        result.update(spread_evenly(placed, workers, current.get, order=lambda c: c))
    return result
