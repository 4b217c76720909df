"""Exact store + graph: what a search sees while the builder works, soft deletion, compaction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facegrid.indexer.core import Shard
from facegrid.indexer.core.gallery import SEARCH_CHUNK, ExactStore, GalleryIndex, HnswParams


def _brute_force(ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, n: int) -> list[int]:
    distances = np.linalg.norm(vectors - query, axis=1)
    return [int(ids[i]) for i in np.argsort(distances)[:n]]


def test_small_galleries_are_searched_exactly_without_a_graph(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    shard = Shard("s", tmp_path, HnswParams(graph_min=1000))
    vectors = rng.normal(size=(500, 64)).astype(np.float32)
    ids = np.arange(1, 501, dtype=np.uint64)
    shard.add("g", ids, vectors)
    shard.wait_indexed()
    (stats,) = shard.stats().galleries
    assert (stats.indexed, stats.unindexed) == (0, 500)
    for q in vectors[:20] + 0.3:
        result = shard.search("g", q, 10)
        assert not result.used_index
        assert [i for i, _ in result.hits] == _brute_force(ids, vectors, q, 10)
    shard.close()


def test_a_search_merges_the_graph_and_the_not_yet_indexed_tail(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    shard = Shard("s", tmp_path, HnswParams(graph_min=100), build=False)
    vectors = rng.normal(size=(400, 32)).astype(np.float32)
    ids = np.arange(1, 401, dtype=np.uint64)
    shard.add("g", ids, vectors)
    for _ in range(3):  # 192 of 400 move into the graph; the rest stay exact
        assert shard.build_step()
    (stats,) = shard.stats().galleries
    assert (stats.count, stats.indexed, stats.unindexed) == (400, 192, 208)

    found_in_graph = found_in_tail = 0
    for row in range(400):
        result = shard.search("g", vectors[row], 1)
        assert result.used_index
        assert result.hits[0][0] == ids[row]
        found_in_graph += row >= 208  # take() moves rows from the end
        found_in_tail += row < 208
    assert found_in_graph and found_in_tail

    shard.wait_indexed()
    assert shard.stats().galleries[0].unindexed == 0
    shard.close()


def test_linear_search_is_exact_even_with_a_graph(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    # A deliberately poor graph (M=2, tiny ef) so that HNSW alone would miss neighbours.
    shard = Shard("s", tmp_path, HnswParams(m=2, ef_construction=8, ef_search=1, graph_min=10))
    vectors = rng.normal(size=(3000, 64)).astype(np.float32)
    ids = np.arange(1, 3001, dtype=np.uint64)
    shard.add("g", ids, vectors)
    shard.wait_indexed()
    misses = 0
    for q in rng.normal(size=(30, 64)).astype(np.float32):
        exact = shard.search("g", q, 5, exact=True)
        assert not exact.used_index
        assert [i for i, _ in exact.hits] == _brute_force(ids, vectors, q, 5)
        misses += [i for i, _ in shard.search("g", q, 5).hits] != [i for i, _ in exact.hits]
    assert misses > 0  # the graph alone really is approximate here
    shard.close()


def test_deleted_vectors_vanish_at_once_and_their_places_are_reused(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    shard = Shard("s", tmp_path, HnswParams(graph_min=10), build=False)
    vectors = rng.normal(size=(200, 16)).astype(np.float32)
    shard.add("g", np.arange(1, 201, dtype=np.uint64), vectors)
    shard.wait_indexed()
    shard.delete("g", np.array([5, 6, 7], np.uint64))
    assert shard.search("g", vectors[4], 1).hits[0][0] != 5
    (stats,) = shard.stats().galleries
    assert (stats.count, stats.indexed, stats.deleted) == (197, 197, 3)

    shard.add("g", np.array([5], np.uint64), vectors[4:5] + 1)  # back, with a new vector
    shard.wait_indexed()
    (stats,) = shard.stats().galleries
    assert (stats.count, stats.indexed, stats.deleted) == (198, 198, 2)
    assert shard.search("g", vectors[4] + 1, 1).hits == [(5, pytest.approx(0.0, abs=1e-3))]
    shard.close()


def test_many_deletions_are_compacted_away_without_a_restart(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    shard = Shard("s", tmp_path, HnswParams(graph_min=10))
    vectors = rng.normal(size=(4000, 16)).astype(np.float32)
    ids = np.arange(1, 4001, dtype=np.uint64)
    shard.add("g", ids, vectors)
    shard.wait_indexed()
    shard.delete("g", ids[::2])
    shard.wait_indexed()  # the builder compacts once a quarter of the places are deleted
    (stats,) = shard.stats().galleries
    assert (stats.count, stats.indexed, stats.deleted) == (2000, 2000, 0)
    for row in range(1, 4000, 98):  # odd rows: the kept ids
        assert shard.search("g", vectors[row], 1).hits[0][0] == ids[row]
    shard.close()


def test_deletes_during_a_compaction_are_kept() -> None:
    rng = np.random.default_rng(6)
    gallery = GalleryIndex(8, HnswParams(graph_min=10))
    vectors = rng.normal(size=(3000, 8)).astype(np.float32)
    ids = np.arange(1, 3001, dtype=np.uint64)
    gallery.add(ids, vectors)
    while gallery.pending():
        gallery.build_step(500)
    gallery.delete(ids[:1000])
    assert gallery.needs_compaction()

    todo = gallery.begin_compaction()
    graph = gallery.new_graph_for_compaction(len(todo))
    labels, copied_vectors = gallery.copy_for_compaction(todo[:1000])
    graph.add_items(copied_vectors, labels)
    gallery.delete(ids[1000:1010])  # one copied already, the other not yet
    gallery.delete(ids[2990:3000])
    labels2, copied_vectors2 = gallery.copy_for_compaction(todo[1000:])
    graph.add_items(copied_vectors2, labels2)
    gallery.finish_compaction(graph, set(labels.tolist()) | set(labels2.tolist()))

    assert len(gallery) == 1980
    assert gallery.deleted == 10  # the copied one marked again in the new graph
    hits = gallery.search(vectors[1005], 3, 0.0).hits
    assert 1006 not in [i for i, _ in hits]
    assert gallery.search(vectors[1500], 1, 0.0).hits[0][0] == 1501


def test_exact_search_across_chunks_matches_brute_force() -> None:
    rng = np.random.default_rng(7)
    store = ExactStore(8)
    vectors = rng.normal(size=(SEARCH_CHUNK * 2 + 123, 8)).astype(np.float32)
    ids = np.arange(1, len(vectors) + 1, dtype=np.uint64)
    store.add(ids, vectors)
    for q in rng.normal(size=(5, 8)).astype(np.float32):
        hits = store.search(q, 7)
        assert [i for i, _ in hits] == _brute_force(ids, vectors, q, 7)
        exact = np.linalg.norm(vectors[hits[0][0] - 1] - q)
        assert hits[0][1] == pytest.approx(float(exact), rel=1e-5)


def test_a_drained_backlog_gives_its_memory_back() -> None:
    store = ExactStore(128)
    store.add(np.arange(1, 100_001, dtype=np.uint64), np.ones((100_000, 128), np.float32))
    peak = store._vectors.nbytes  # the matrix itself; no public size to read
    while len(store) > 5000:
        store.take(5000)
    assert store._vectors.nbytes < peak / 8
    assert len(store.search(np.ones(128, np.float32), 3)) == 3
