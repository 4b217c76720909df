"""Group commit: concurrent writers share fsyncs, and every acknowledged write survives."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from facegrid.indexer.core import Shard

WRITERS = 8
WRITES_EACH = 50


def test_concurrent_adds_share_fsyncs_and_all_survive(tmp_path: Path) -> None:
    shard = Shard("s", tmp_path)
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(WRITERS * WRITES_EACH, 16)).astype(np.float32)

    def writer(w: int) -> list[int]:
        acknowledged = []
        for k in range(WRITES_EACH):
            face_id = w * WRITES_EACH + k + 1  # ids start at 1: list_ids lists ids > 0
            shard.add("g", np.array([face_id], np.uint64), vectors[face_id - 1 : face_id])
            acknowledged.append(face_id)
        return acknowledged

    with ThreadPoolExecutor(WRITERS) as pool:
        acknowledged = sorted(i for ids in pool.map(writer, range(WRITERS)) for i in ids)
    fsyncs = shard._wal.fsyncs
    shard.close()
    writes = WRITERS * WRITES_EACH
    # Writers that arrive during an fsync are covered by the next one.
    assert fsyncs < writes

    reopened = Shard("s", tmp_path)
    assert reopened.lsn == writes
    ids, more = reopened.list_ids("g", 0, writes + 1)
    assert not more
    assert ids.tolist() == acknowledged
    _, stored = reopened.get("g", np.array([124], np.uint64))
    np.testing.assert_array_equal(stored[0], vectors[123])
    reopened.close()
