"""Which slot a face id falls into: the one rule the gateway, the shards and the control planes
must share. A placement maps each of a gallery's SLOT_COUNT slots to a shard."""

from __future__ import annotations

SLOT_COUNT = 1024


def slot_of(face_id: int) -> int:
    """Slot of a 64-bit face id. Ids are time-ordered, so mix the bits before taking the slot."""
    mixed = (face_id * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    return (mixed >> 32) % SLOT_COUNT
