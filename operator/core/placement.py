"""Galleries and their placement on index shards: the rules both control planes follow.

A face id falls into slot `slot_of(id)`; a placement maps each of a gallery's SLOT_COUNT slots to
a shard. Slots are spread over shards in contiguous, even runs, as the seed's
`tntapi_cluster.json` spread its shards over 1024 cells.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Re-exported: the control planes and their tests take them from here.
from facegrid.operator.core.balance import spread_evenly
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
    """slot_shards[slot] indexes `shards`. While the gallery is resharded, `target` (same form)
    says where each slot is going: writes go to both owners, reads to the current one."""

    gallery: str
    version: int
    shards: tuple[ShardRef, ...]
    slot_shards: tuple[int, ...]
    target: tuple[int, ...] = ()

    def shard_for(self, face_id: int) -> ShardRef:
        return self.shards[self.slot_shards[slot_of(face_id)]]

    @property
    def resharding(self) -> bool:
        return bool(self.target)


def spread(shard_count: int) -> tuple[int, ...]:
    """Contiguous, even runs of slots per shard: slot i goes to shard floor(i * n / SLOT_COUNT)."""
    if shard_count <= 0:
        raise ValueError("need at least one shard")
    return tuple(i * shard_count // SLOT_COUNT for i in range(SLOT_COUNT))


def place(gallery: str, shards: tuple[ShardRef, ...], version: int = 1) -> Placement:
    return Placement(gallery, version, shards, spread(len(shards)))


def new_camera_id() -> str:
    return str(uuid.uuid4())


def rebalance(owners: Sequence[str | None], shards: Sequence[str]) -> tuple[str, ...]:
    """Each slot's new owner among `shards`: balanced, and moving as few slots as possible.

    Every shard ends with floor or ceil of len(owners) / len(shards) slots; the shards that
    already hold the most get the ceil. A shard keeps its own slots up to that quota (the lowest
    numbered first); the rest, and slots whose owner is gone or None, fill the shards below
    quota in order, lowest slot first, so that a fresh placement is contiguous runs.
    """
    if not shards:
        raise ValueError("need at least one shard")
    if len(set(shards)) != len(shards):
        raise ValueError(f"shard names repeat: {list(shards)}")
    placed = spread_evenly(
        range(len(owners)), shards, lambda slot: owners[slot], order=lambda slot: slot
    )
    return tuple(placed[slot] for slot in range(len(owners)))


def slot_ranges(slots: Iterable[int]) -> str:
    """ "0-511,700,702-703": sorted slots as runs, the form FaceGallery status shows."""
    runs: list[list[int]] = []
    for slot in sorted(set(slots)):
        if runs and runs[-1][1] == slot - 1:
            runs[-1][1] = slot
        else:
            runs.append([slot, slot])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def parse_slot_ranges(text: str) -> list[int]:
    slots: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition("-")
        slots.extend(range(int(first), int(last or first) + 1))
    return slots
