"""Dynamic person creation, friend-or-foe, and camera history, as the seed's facenapi does them.

Every face posted with a `cam_id` becomes a history event. With `person_identify` on, the face
is first compared with the faces seen before (on the same camera, or on all cameras with
`person_identify_global`): if the most similar one reaches `person_identify_threshold`, the new
face joins its person; otherwise it starts a new person. Those comparisons search internal
galleries (one per camera, or one for all), named with a prefix client galleries cannot use.
A person is a friend on a camera once it was seen there on `friend_count` different days within
the last `friend_interval` seconds.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Protocol

from facegrid import confidence
from facegrid.gateway.core.errors import BadParam
from facegrid.gateway.core.model import BBox

# Client gallery names may not start with this; the gateway's own galleries do.
INTERNAL_PREFIX = "fg--"
GLOBAL_PERSONS = f"{INTERNAL_PREFIX}persons"
# Where faces posted without a cam_id find their persons: they form a camera of their own.
NO_CAMERA_PERSONS = f"{INTERNAL_PREFIX}photos"
_CAM_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")


def is_internal(gallery: str) -> bool:
    return gallery.startswith(INTERNAL_PREFIX)


def check_cam_id(value: object) -> str:
    if not isinstance(value, str) or not _CAM_ID.fullmatch(value):
        raise BadParam(
            "cam_id must be 1-40 characters of letters, digits, '_' and '-' (a camera UUID)",
            param="cam_id",
            value=value,
        )
    return value


@dataclass(frozen=True)
class PersonPolicy:
    identify: bool = False
    identify_global: bool = False
    threshold: float = 0.75
    friend_count: int = 5
    friend_interval: dt.timedelta = dt.timedelta(days=7)

    def gallery_for(self, cam_id: str | None) -> str:
        if self.identify_global:
            return GLOBAL_PERSONS
        return NO_CAMERA_PERSONS if cam_id is None else f"{INTERNAL_PREFIX}cam-{cam_id}"

    @property
    def max_distance(self) -> float:
        return confidence.distance_for(self.threshold)


@dataclass(frozen=True)
class Event:
    id: int
    face_id: int
    cam_id: str
    timestamp: dt.datetime
    bbox: BBox
    meta: str
    photo: str
    photo_hash: str
    screenshot: str
    person_id: int | None
    friend: bool


@dataclass(frozen=True)
class HistoryQuery:
    person_id: int | None = None
    cam_ids: tuple[str, ...] = ()
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    friend: bool | None = None
    # 0: no limit.
    limit: int = 0
    max_id: int | None = None


@dataclass(frozen=True)
class Person:
    id: int
    meta: str
    created_at: dt.datetime


class HistoryStore(Protocol):
    async def next_event_id(self) -> int: ...

    async def next_person_id(self) -> int: ...

    async def add_person(self, person: Person) -> None: ...

    async def claim_person(self, person: Person) -> None:
        """A person id a client chose (PUT person_id): its record made if missing, and the id
        kept from persons created later."""
        ...

    async def move_events(self, face_id: int, person_id: int) -> None:
        """The face's camera events now belong to the person."""
        ...

    async def person(self, person_id: int) -> Person | None: ...

    async def persons(self, max_id: int | None, limit: int) -> list[Person]: ...

    async def add_event(self, event: Event) -> None: ...

    async def seen_on(self, person_id: int, cam_id: str, day: dt.datetime) -> bool:
        """Whether an event of the person on the camera exists on that (UTC) day."""
        ...

    async def days_seen(
        self, person_id: int, cam_id: str, since: dt.datetime, until: dt.datetime
    ) -> int:
        """On how many distinct (UTC) days the person was seen on the camera in [since, until]."""
        ...

    async def events(self, query: HistoryQuery) -> list[Event]:
        """Matching events, newest first, at most query.limit (all when 0)."""
        ...


def parse_time(value: object, param: str) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadParam(f"{param} must be an ISO 8601 time", param=param, value=value)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadParam(f"{param} must be an ISO 8601 time", param=param, value=value) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def parse_cam_ids(value: object) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        raise BadParam("cam_ids must be an array of camera ids", param="cam_ids", value=value)
    return tuple(str(v).strip() for v in value)


def is_friend(days_seen: int, policy: PersonPolicy) -> bool:
    return days_seen >= policy.friend_count
