"""What both control planes hand out: galleries, cameras and placement changes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from facegrid.operator.core.cameras import Region
from facegrid.operator.core.placement import Placement


@dataclass(frozen=True)
class GalleryRecord:
    name: str
    created_at: dt.datetime
    placement: Placement


@dataclass(frozen=True)
class CameraRecord:
    id: str
    url: str
    detector: str
    meta: str
    active: bool
    created_at: dt.datetime
    rot: Region | None = None
    roi: Region | None = None
    # The worker pod the operator assigned the camera to; empty on one machine.
    worker: str = ""
    # Overrides of the worker's options (name, ini-style value); none on one machine.
    options: tuple[tuple[str, str], ...] = ()
    status: CameraStatus | None = None


@dataclass(frozen=True)
class CameraStatus:
    """How a camera is doing: its phase and what its worker last reported."""

    phase: str
    worker: str = ""
    frames_per_second: float = 0.0
    posts: int = 0
    last_post: dt.datetime | None = None
    reason: str = ""
    reported_at: dt.datetime | None = None


@dataclass(frozen=True)
class PlacementChange:
    deleted: bool
    placement: Placement


@dataclass(frozen=True)
class CameraState:
    """What a video worker reports about one of its cameras."""

    id: str
    streaming: bool
    frames_per_second: float
    posts: int
    last_post: dt.datetime | None = None


@dataclass(frozen=True)
class CameraRefusal:
    """A camera its worker does not process: the licence's camera limit, or another reason."""

    id: str
    licence: bool
    reason: str
