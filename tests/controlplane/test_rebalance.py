"""Slot placement and camera assignment: balanced, and moving as little as possible.

Property-based: hypothesis drives long sequences of shards and worker pods coming and going.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from facegrid.operator.core.cameras import assign, workers_needed
from facegrid.operator.core.placement import (
    SLOT_COUNT,
    parse_slot_ranges,
    rebalance,
    slot_ranges,
    spread,
)

NAMES = [f"indexer-{i}" for i in range(12)]


def check_balanced(owners: tuple[str, ...], shards: list[str]) -> None:
    counts = Counter(owners)
    assert set(counts) == set(shards)
    assert max(counts.values()) - min(counts.values()) <= 1


def least_moves(before: tuple[str, ...], shards: list[str]) -> int:
    """The fewest slots any balanced placement over `shards` must move away from `before`."""
    held = Counter(o for o in before if o in shards)
    base, extra = divmod(len(before), len(shards))
    ranked = sorted(shards, key=lambda s: -held[s])
    quota = {s: base + (1 if rank < extra else 0) for rank, s in enumerate(ranked)}
    return sum(max(0, held[s] - quota[s]) for s in shards) + sum(
        1 for o in before if o not in shards
    )


def test_a_fresh_placement_is_contiguous_runs_in_shard_order() -> None:
    for count in (1, 2, 3, 7, 1024):
        shards = NAMES[:count] if count <= len(NAMES) else [f"s{i}" for i in range(count)]
        owners = rebalance([None] * SLOT_COUNT, shards)
        check_balanced(owners, shards)
        assert sorted(owners, key=shards.index) == list(owners)
    # Where the counts divide evenly it is exactly the local control plane's spread.
    assert rebalance([None] * SLOT_COUNT, NAMES[:4]) == tuple(NAMES[i] for i in spread(4))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=12))
def test_scaling_sequences_stay_balanced_and_move_the_minimum(sizes: list[int]) -> None:
    owners = rebalance([None] * SLOT_COUNT, NAMES[: sizes[0]])
    for size in sizes[1:]:
        shards = NAMES[:size]
        after = rebalance(owners, shards)
        check_balanced(after, shards)
        moved = sum(1 for a, b in zip(owners, after, strict=True) if a != b)
        assert moved == least_moves(owners, shards)
        if size >= len(set(owners)):
            # Growing: a slot only ever moves onto a new shard, never between old ones.
            assert all(b not in set(owners) for a, b in zip(owners, after, strict=True) if a != b)
        owners = after


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(NAMES), min_size=1, max_size=12, unique=True))
def test_any_shard_subset_is_balanced(shards: list[str]) -> None:
    owners = rebalance(rebalance([None] * SLOT_COUNT, NAMES), shards)
    check_balanced(owners, shards)
    assert rebalance(owners, shards) == owners  # already balanced: nothing moves


def test_slot_ranges_round_trip() -> None:
    slots = [0, 1, 2, 5, 7, 8, 1023]
    assert slot_ranges(slots) == "0-2,5,7-8,1023"
    assert parse_slot_ranges(slot_ranges(slots)) == slots
    assert parse_slot_ranges("") == []


def test_workers_needed_is_the_ceiling() -> None:
    assert [workers_needed(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


CAMERAS = [f"cam-{i:02d}" for i in range(30)]
PODS = [f"video-{i}" for i in range(8)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(CAMERAS), unique=True, max_size=30),
            st.lists(st.sampled_from(PODS), unique=True, max_size=8),
        ),
        min_size=1,
        max_size=10,
    ),
    st.integers(min_value=1, max_value=6),
)
def test_camera_assignment_is_even_bounded_and_sticky(
    steps: list[tuple[list[str], list[str]]], detectors_max: int
) -> None:
    current: dict[str, str] = {}
    for cameras, pods in steps:
        result = assign(cameras, pods, current, detectors_max)
        assert set(result) == set(cameras)
        placed = {c: w for c, w in result.items() if w is not None}
        assert len(placed) == min(len(cameras), len(pods) * detectors_max)
        load = Counter(placed.values())
        assert all(n <= detectors_max for n in load.values())
        if pods and placed:
            loads = [load.get(p, 0) for p in pods]
            assert max(loads) - min(loads) <= 1
        # A camera whose pod lives and is not over its share stays put.
        base = len(placed) // (len(pods) or 1)
        for camera, worker in placed.items():
            before = current.get(camera)
            if before in pods and sum(1 for w in current.values() if w == before) <= base:
                assert worker == before, (camera, before, worker)
        current = placed


def test_cameras_beyond_the_pool_wait_in_name_order() -> None:
    result = assign(["c", "a", "b"], ["w0"], {}, 2)
    assert result == {"a": "w0", "b": "w0", "c": None}
