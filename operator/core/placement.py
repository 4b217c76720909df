"""Galleries and their placement on index shards: the rules both control planes follow.

A face id falls into slot `slot_of(id)`; a placement maps each of a gallery's SLOT_COUNT slots to
a shard. Slots are spread over shards in contiguous, even runs, as the seed's
`tntapi_cluster.json` spread its shards over 1024 cells.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

# Re-exported: the control planes and their tests take them from here.
from facegrid.slots import SLOT_COUNT as SLOT_COUNT
from facegrid.slots import slot_of as slot_of

DEFAULT_GALLERY = "default"
_GALLERY_NAME = re.compile(r"[a-zA-Z0-9_-]{1,48}")


class ControlPlaneError(Exception):
    pass


class InvalidRequest(ControlPlaneError):
    pass


class InvalidName(InvalidRequest):
    pass


class AlreadyExists(ControlPlaneError):
    pass


class NotFound(ControlPlaneError):
    pass


class Refused(ControlPlaneError):
    """The request is well formed but would break an invariant (deleting `default`, ...)."""


class Unavailable(ControlPlaneError):
    """A shard or store needed for the change did not answer; retrying later may succeed."""


def validate_gallery_name(name: str) -> str:
    """FindFace's rule: English letters, digits, `_` and `-`, at most 48 characters."""
    if not _GALLERY_NAME.fullmatch(name):
        raise InvalidName(f"gallery name {name!r} must be 1-48 characters of [a-zA-Z0-9_-]")
    return name


@dataclass(frozen=True)
class ShardRef:
    name: str
    address: str
    replicas: tuple[str, ...] = ()


@dataclass(frozen=True)
class Placement:
    gallery: str
    version: int
    shards: tuple[ShardRef, ...]
    slot_shards: tuple[int, ...]

    def shard_for(self, face_id: int) -> ShardRef:
        return self.shards[self.slot_shards[slot_of(face_id)]]


def spread(shard_count: int) -> tuple[int, ...]:
    """Contiguous, even runs of slots per shard: slot i goes to shard floor(i * n / SLOT_COUNT)."""
    if shard_count <= 0:
        raise ValueError("need at least one shard")
    return tuple(i * shard_count // SLOT_COUNT for i in range(SLOT_COUNT))


def place(gallery: str, shards: tuple[ShardRef, ...], version: int = 1) -> Placement:
    return Placement(gallery, version, shards, spread(len(shards)))


def new_camera_id() -> str:
    return str(uuid.uuid4())
