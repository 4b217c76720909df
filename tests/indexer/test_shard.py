"""The shard's behaviour in process: galleries, search, validation and restart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facegrid.indexer.core import (
    DimensionMismatch,
    DuplicateId,
    GalleryNotFound,
    InvalidRequest,
    Shard,
)
from facegrid.indexer.core.gallery import HnswParams
from facegrid.indexer.core.wal import Op, WalRecord
from facegrid.indexer.wire import record_from_wire, record_to_wire


def _ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def test_search_finds_nearest_with_euclidean_distance(
    shard: Shard, rng: np.random.Generator
) -> None:
    vectors = rng.normal(size=(200, 128)).astype(np.float32)
    shard.add("g", np.arange(1, 201, dtype=np.uint64), vectors)

    query = vectors[41] + 0.001
    hits = shard.search("g", query, top_n=3).hits
    assert hits[0][0] == 42
    assert hits[0][1] == pytest.approx(float(np.linalg.norm(query - vectors[41])), rel=1e-3)
    assert [d for _, d in hits] == sorted(d for _, d in hits)

    exact = np.linalg.norm(vectors - query, axis=1)
    assert {i for i, _ in hits} == {int(i) + 1 for i in np.argsort(exact)[:3]}


def test_max_distance_cuts_far_hits(shard: Shard) -> None:
    shard.add("g", _ids(1, 2), np.array([[0, 0], [10, 0]], dtype=np.float32))
    assert [i for i, _ in shard.search("g", np.array([0, 0.5], np.float32), 5).hits] == [1, 2]
    assert shard.search("g", np.array([0, 0.5], np.float32), 5, max_distance=1.0).hits == [
        (1, pytest.approx(0.5))
    ]


def test_galleries_are_separate(shard: Shard) -> None:
    shard.add("a", _ids(1), np.ones((1, 4), np.float32))
    shard.add("b", _ids(2), np.ones((1, 4), np.float32))
    assert [i for i, _ in shard.search("a", np.ones(4, np.float32), 10).hits] == [1]
    assert shard.search("nope", np.ones(4, np.float32), 10).hits == []


def test_duplicate_ids_fail_whole_call_and_write_nothing(shard: Shard) -> None:
    shard.add("g", _ids(1), np.zeros((1, 2), np.float32))
    lsn = shard.lsn
    with pytest.raises(DuplicateId):
        shard.add("g", _ids(5, 1), np.ones((2, 2), np.float32))
    assert shard.lsn == lsn
    assert shard.stats().galleries[0].count == 1


def test_upsert_replaces_vector(shard: Shard) -> None:
    shard.add("g", _ids(1), np.zeros((1, 2), np.float32))
    shard.add("g", _ids(1), np.full((1, 2), 3, np.float32), upsert=True)
    found, vectors = shard.get("g", _ids(1))
    assert found.tolist() == [1]
    np.testing.assert_array_equal(vectors, [[3, 3]])
    assert shard.stats().galleries[0].count == 1


@pytest.mark.parametrize(
    ("gallery", "ids", "vectors", "error"),
    [
        ("", _ids(1), np.zeros((1, 2)), InvalidRequest),
        ("g", _ids(1, 2), np.zeros((1, 2)), InvalidRequest),
        ("g", _ids(1, 1), np.zeros((2, 2)), InvalidRequest),
        ("g", _ids(1), np.array([[np.nan, 0]]), InvalidRequest),
        ("g", _ids(), np.zeros((0, 2)), InvalidRequest),
    ],
)
def test_bad_adds_are_rejected(
    shard: Shard, gallery: str, ids: np.ndarray, vectors: np.ndarray, error: type[Exception]
) -> None:
    with pytest.raises(error):
        shard.add(gallery, ids, vectors)
    assert shard.lsn == 0


def test_dimension_of_gallery_is_fixed_by_first_add(shard: Shard) -> None:
    shard.add("g", _ids(1), np.zeros((1, 128), np.float32))
    with pytest.raises(DimensionMismatch):
        shard.add("g", _ids(2), np.zeros((1, 512), np.float32))
    with pytest.raises(DimensionMismatch):
        shard.search("g", np.zeros(512, np.float32), 1)


def test_delete_list_and_drop(shard: Shard) -> None:
    shard.add("g", np.arange(1, 11, dtype=np.uint64), np.eye(10, dtype=np.float32))
    assert shard.delete("g", _ids(3, 4, 99))[0] == 2
    assert shard.delete("g", _ids(99))[0] == 0
    page, more = shard.list_ids("g", 0, 5)
    assert page.tolist() == [1, 2, 5, 6, 7] and more
    page, more = shard.list_ids("g", 7, 5)
    assert page.tolist() == [8, 9, 10] and not more
    assert 3 not in [i for i, _ in shard.search("g", np.eye(10, dtype=np.float32)[2], 10).hits]
    assert shard.drop_gallery("g")[0] == 8
    with pytest.raises(GalleryNotFound):
        shard.list_ids("g", 0, 5)


def test_restart_restores_every_acknowledged_write(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    vectors = rng.normal(size=(50, 16)).astype(np.float32)
    first = Shard("s", tmp_path)
    first.add("g", np.arange(50, dtype=np.uint64) + 1000, vectors)
    first.delete("g", _ids(1000))
    first.add("other", _ids(7), vectors[:1])
    first.drop_gallery("other")
    lsn = first.lsn
    first.close()

    second = Shard("s", tmp_path)
    assert second.lsn == lsn
    assert [(g.name, g.count, g.dim) for g in second.stats().galleries] == [("g", 49, 16)]
    assert second.search("g", vectors[10], 1).hits[0][0] == 1010
    assert second.search("g", vectors[0], 1).hits[0][0] != 1000
    second.close()


def test_index_grows_past_initial_capacity(shard: Shard, rng: np.random.Generator) -> None:
    vectors = rng.normal(size=(3000, 8)).astype(np.float32)
    for start in range(0, 3000, 1000):
        shard.add(
            "g", np.arange(start, start + 1000, dtype=np.uint64), vectors[start : start + 1000]
        )
    assert shard.stats().galleries[0].count == 3000
    assert shard.search("g", vectors[2500], 1).hits[0][0] == 2500


def test_a_gallery_keeps_its_own_hnsw_parameters_across_restarts(tmp_path: Path) -> None:
    """ConfigureGallery: logged, so the log replay and snapshots both keep them; a gallery
    configured before its first vector gets them too; dropping the gallery forgets them."""
    own = HnswParams(m=24, ef_construction=200, ef_search=96)
    first = Shard("s", tmp_path, HnswParams(m=16, ef_construction=100, ef_search=128))
    lsn = first.configure("g", own)
    assert first.configure("g", own) == lsn  # unchanged: nothing logged
    first.add("g", _ids(1, 2), np.eye(2, 8, dtype=np.float32))
    first.add("plain", _ids(3), np.ones((1, 8), np.float32))
    first.configure("later", HnswParams(m=8, ef_construction=50, ef_search=20))
    params = {g.name: g.params for g in first.stats().galleries}
    assert params == {"g": own, "plain": HnswParams(16, 100, 128)}
    first.close()

    replayed = Shard("s", tmp_path, HnswParams())
    assert {g.name: g.params for g in replayed.stats().galleries}["g"] == own
    replayed.snapshot(force=True)
    replayed.close()

    from_snapshot = Shard("s", tmp_path, HnswParams())
    assert {g.name: g.params for g in from_snapshot.stats().galleries}["g"] == own
    from_snapshot.add("later", _ids(4), np.ones((1, 8), np.float32))
    assert {g.name: g.params for g in from_snapshot.stats().galleries}["later"].m == 8
    from_snapshot.drop_gallery("g")
    from_snapshot.add("g", _ids(1), np.ones((1, 8), np.float32))
    assert {g.name: g.params for g in from_snapshot.stats().galleries}["g"] == HnswParams()
    with pytest.raises(InvalidRequest, match="out of range"):
        from_snapshot.configure("g", HnswParams(m=1, ef_construction=100, ef_search=10))
    from_snapshot.close()


def test_configure_records_travel_to_followers_intact() -> None:
    record = WalRecord(Op.CONFIGURE, "g", lsn=9, hnsw=(24, 200, 96))
    for copy in (WalRecord.decode(record.encode()[8:]), record_from_wire(record_to_wire(record))):
        assert (copy.op, copy.gallery, copy.lsn, copy.hnsw) == (Op.CONFIGURE, "g", 9, (24, 200, 96))
