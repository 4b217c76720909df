"""Placement rules: slots spread evenly, ids spread over slots, FindFace's gallery names."""

from __future__ import annotations

from collections import Counter

import pytest

from facegrid.operator.core.placement import (
    SLOT_COUNT,
    InvalidName,
    ShardRef,
    place,
    slot_of,
    spread,
    validate_gallery_name,
)


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 7, 16])
def test_spread_is_contiguous_and_even(shards: int) -> None:
    slots = spread(shards)
    assert len(slots) == SLOT_COUNT
    assert list(slots) == sorted(slots)
    sizes = Counter(slots).values()
    assert len(sizes) == shards
    assert max(sizes) - min(sizes) <= 1


def test_spread_matches_the_seed_cluster_file_rule() -> None:
    # The seed built tntapi_cluster.json with cell i -> shard int(i * t / 1024).
    assert spread(4)[255] == 0
    assert spread(4)[256] == 1
    assert spread(3)[1023] == 2


def test_time_ordered_ids_spread_over_all_slots() -> None:
    base = 1_700_000_000_000 << 16
    slots = Counter(slot_of(base + i) for i in range(20_000))
    assert len(slots) == SLOT_COUNT
    assert max(slots.values()) < 3 * 20_000 / SLOT_COUNT


def test_placement_routes_an_id_to_its_slots_shard() -> None:
    shards = (ShardRef("a", "h:1"), ShardRef("b", "h:2"))
    placement = place("g", shards)
    for face_id in (1, 2**40 + 3, 2**63):
        assert placement.shard_for(face_id) is shards[spread(2)[slot_of(face_id)]]


@pytest.mark.parametrize("name", ["default", "test-gal_1", "a" * 48])
def test_valid_gallery_names(name: str) -> None:
    assert validate_gallery_name(name) == name


@pytest.mark.parametrize("name", ["", "a" * 49, "with space", "кириллица", "a/b", "a.b"])
def test_invalid_gallery_names(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_gallery_name(name)
