"""The gateway's ports: what the face operations need from the extractor, the index, the
database and the media store. Adapters implement them over gRPC, MongoDB and GridFS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from facegrid.gateway.core.model import Attributes, BBox, Face


@dataclass(frozen=True)
class Detection:
    bbox: BBox
    score: float
    quality: float
    # Five (x, y) landmarks, flattened; empty when the box came from the client.
    landmarks: tuple[float, ...] = ()


@dataclass(frozen=True)
class Detected:
    faces: list[Detection]
    # The photo's EXIF orientation (1..8); boxes refer to the photo turned upright.
    orientation: int = 1


@dataclass(frozen=True)
class Wanted:
    gender: bool = False
    age: bool = False
    emotions: bool = False
    normalized: bool = False

    @property
    def attributes(self) -> bool:
        return self.gender or self.age or self.emotions


@dataclass(frozen=True)
class Extraction:
    bbox: BBox
    facen: bytes
    quality: float
    attributes: Attributes | None = None
    normalized: bytes = b""


@dataclass(frozen=True)
class Extracted:
    # The model that made the vectors, e.g. "dlib-resnet-v1@2026.11.1".
    model: str
    faces: list[Extraction]


class Extractor(Protocol):
    async def model(self) -> str:
        """The model its vectors come from, as Extracted.model names it."""
        ...

    async def detect(self, photo: bytes, roi: BBox | None = None) -> Detected: ...

    async def extract(
        self, photo: bytes, faces: Sequence[Detection], wanted: Wanted
    ) -> Extracted: ...

    async def extract_chip(self, chip: bytes, wanted: Wanted) -> Extracted:
        """A face from an already aligned chip (the video worker's `face0`)."""
        ...

    async def extract_biggest(self, photo: bytes, wanted: Wanted) -> Extracted:
        """The biggest face on the photo, found and extracted in one call (none: no faces)."""
        ...


@dataclass(frozen=True)
class SearchOutcome:
    # (face id, Euclidean distance), nearest first.
    hits: list[tuple[int, float]]
    live: int
    total: int
    used_index: bool = False


class FaceIndex(Protocol):
    async def add(self, face_id: int, vector: bytes, galleries: Sequence[str]) -> None: ...

    async def delete(self, face_id: int, galleries: Sequence[str]) -> None: ...

    async def delete_many(self, face_ids: Sequence[int], galleries: Sequence[str]) -> None: ...

    async def search(
        self,
        gallery: str,
        vector: bytes,
        n: int,
        max_distance: float = 0.0,
        *,
        strict: bool = False,
        linear: bool = False,
    ) -> SearchOutcome: ...


@dataclass(frozen=True)
class NewFace:
    """A face about to be stored: its record and its vector."""

    face: Face
    facen: bytes
    extra: dict[str, object] = field(default_factory=dict)
    # Vectors of other models than face.model (for indexes a model migration builds), by model.
    vectors: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class MetaSummary:
    meta: str
    count: int
    face: Face


class FaceStore(Protocol):
    async def next_ids(self, count: int) -> list[int]: ...

    async def insert_pending(self, faces: Sequence[NewFace]) -> None:
        """Store records that are not visible until `activate` (their vectors are being
        indexed); a crash in between leaves pending records a repair pass can finish."""
        ...

    async def activate(self, ids: Sequence[int]) -> None: ...

    async def remove(self, ids: Sequence[int]) -> None: ...

    async def get(self, face_id: int) -> Face | None: ...

    async def vector(self, face_id: int, model: str) -> bytes | None:
        """The face's vector of the model, if it has one."""
        ...

    async def get_many(self, ids: Sequence[int]) -> dict[int, Face]: ...

    async def update(
        self,
        face_id: int,
        *,
        meta: str | None = None,
        person_id: int | None = None,
        galleries: Sequence[str] | None = None,
        hidden_galleries: Sequence[str] | None = None,
    ) -> Face | None: ...

    async def page(self, *, gallery: str | None, max_id: int | None, limit: int) -> list[Face]:
        """Up to limit faces, highest id first, with an id below max_id (from the top when
        None)."""
        ...

    async def ids_above(self, *, gallery: str | None, min_id: int, limit: int) -> list[int]:
        """The ids of the limit faces just above min_id, ascending."""
        ...

    async def by_meta(self, meta: str, gallery: str | None) -> list[Face]: ...

    async def metas(self, gallery: str | None, max_id: int, limit: int) -> list[MetaSummary]:
        """The limit metas whose first face's id is just below max_id, newest first."""
        ...

    async def meta_ids_above(self, *, gallery: str | None, min_id: int, limit: int) -> list[int]:
        """The first faces' ids of the limit metas just above min_id, ascending."""
        ...

    async def by_person(self, person_id: int) -> list[Face]: ...

    async def set_friend(self, face_id: int, friend: bool) -> None: ...

    async def ids_in_gallery(self, gallery: str) -> list[int]: ...

    async def drop_gallery(self, gallery: str) -> None:
        """Take the gallery out of every face's list."""
        ...


class Quota(Protocol):
    """What the licence allows of a countable resource."""

    async def reserve(self, count: int) -> None:
        """Raises LicenceError (nothing is taken) unless count more fit in the licence."""
        ...


class Unlimited:
    """A Quota that never refuses (tests of other behaviour; a gateway without licensing)."""

    async def reserve(self, count: int) -> None:
        return None


class MediaStore(Protocol):
    async def put(self, name: str, data: bytes, content_type: str) -> str:
        """Store under name (idempotent); returns the path it is served under."""
        ...

    async def get(self, name: str) -> tuple[bytes, str] | None: ...

    async def delete(self, name: str) -> None: ...
