"""IdSet, the compact set of a gallery's graph ids, behaves as a Python set would.

Property-based: hypothesis drives sequences of adds, batch adds, discards and batch discards
over a small id range (so operations collide) and large 64-bit ids, with the merge threshold
lowered so that folds into the sorted array happen throughout.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facegrid.indexer.core import ids as ids_module
from facegrid.indexer.core.ids import IdSet

ID = st.one_of(st.integers(0, 40), st.integers(2**63, 2**64 - 1))
OPERATION = st.one_of(
    st.tuples(st.just("add"), ID),
    st.tuples(st.just("update"), st.lists(ID, max_size=12)),
    st.tuples(st.just("discard"), ID),
    st.tuples(st.just("difference_update"), st.lists(ID, max_size=12)),
)


@settings(max_examples=300, deadline=None)
@given(initial=st.lists(ID, max_size=20), operations=st.lists(OPERATION, max_size=60))
def test_behaves_as_a_set(initial: list[int], operations: list[tuple[str, object]]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ids_module, "MERGE_MIN", 5)
        check_against_a_set(initial, operations)


def check_against_a_set(initial: list[int], operations: list[tuple[str, object]]) -> None:
    ids, model = IdSet(np.array(initial, np.uint64)), set(initial)
    for name, argument in operations:
        getattr(ids, name)(argument)
        if name == "add":
            model.add(argument)  # type: ignore[arg-type]
        elif name == "update":
            model.update(argument)  # type: ignore[arg-type]
        elif name == "discard":
            model.discard(argument)  # type: ignore[arg-type]
        else:
            model.difference_update(argument)  # type: ignore[arg-type]
        assert len(ids) == len(model)
        assert ids.array().tolist() == sorted(model)
    probe = np.array(sorted(set(range(0, 41)) | model), np.uint64)
    assert ids.contains(probe).tolist() == [int(i) in model for i in probe]
    assert all((int(i) in ids) == (int(i) in model) for i in probe)
    assert bool(ids) == bool(model)


def test_array_is_read_only() -> None:
    ids = IdSet([3, 1, 2])
    with pytest.raises(ValueError, match="read-only"):
        ids.array()[0] = 7


def test_a_million_ids_cost_under_twelve_bytes_each() -> None:
    """The point of IdSet: a Python set of 1M ids costs about 78 bytes each. Measured with
    tracemalloc (which numpy reports to), so what counts is what the set holds afterwards: 8
    bytes an id in the array, plus at most 1/32 of them pending in a Python set."""
    rng = np.random.default_rng(5)
    batches = [rng.integers(0, 2**63, 10_000, dtype=np.uint64) for _ in range(100)]
    tracemalloc.start()
    try:
        ids = IdSet()
        for batch in batches:
            ids.update(batch)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ids) == 1_000_000
    assert held / len(ids) < 12
