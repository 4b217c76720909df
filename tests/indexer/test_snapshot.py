"""Snapshots: recovery is snapshot + log replay; damage is reported, never skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facegrid.indexer.core import Shard
from facegrid.indexer.core.errors import SnapshotDamaged, SnapshotNeeded
from facegrid.indexer.core.gallery import HnswParams

# Graphs from 10 vectors up, so these small galleries exercise the graph files too.
SMALL_GRAPHS = HnswParams(graph_min=10)


def _ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def _fill(shard: Shard, rng: np.random.Generator, start: int, count: int) -> np.ndarray:
    vectors = rng.normal(size=(count, 32)).astype(np.float32)
    shard.add("g", np.arange(start, start + count, dtype=np.uint64), vectors)
    return vectors


def _state(shard: Shard) -> tuple[int, list[int]]:
    ids, _ = shard.list_ids("g", 0, 100_000)
    return shard.lsn, ids.tolist()


def test_snapshot_then_more_writes_then_restart(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    shard = Shard("s", tmp_path, SMALL_GRAPHS)
    first = _fill(shard, rng, 1, 500)
    shard.wait_indexed()
    shard.delete("g", _ids(1, 2, 3))
    shard.add("other", _ids(9), np.ones((1, 8), np.float32))
    log_before = (tmp_path / "wal.log").stat().st_size
    lsn = shard.snapshot()
    assert lsn == shard.lsn == 3
    assert (tmp_path / "wal.log").stat().st_size < log_before / 100
    later = _fill(shard, rng, 1000, 50)
    shard.delete("g", _ids(4))
    expected = _state(shard)
    shard.close()

    again = Shard("s", tmp_path)
    assert _state(again) == expected
    assert again.snapshot_lsn == 3
    assert again.search("g", first[10], 1).hits[0][0] == 11
    assert again.search("g", later[7], 1).hits[0][0] == 1007
    assert again.search("g", first[0], 3).hits[0][0] != 1  # deleted before the snapshot
    assert [(g.name, g.count) for g in again.stats().galleries] == [("g", 546), ("other", 1)]
    again.add("g", _ids(5000), later[:1])  # lsns continue after the snapshot's
    assert again.lsn == expected[0] + 1
    again.close()


def test_second_snapshot_replaces_the_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    shard = Shard("s", tmp_path)
    _fill(shard, rng, 1, 10)
    shard.snapshot()
    _fill(shard, rng, 100, 10)
    second = shard.snapshot()
    assert [p.name for p in tmp_path.glob("snapshot-*")] == [f"snapshot-{second:020d}"]
    assert shard.snapshot() == second  # nothing new: no new snapshot
    shard.close()


def test_periodic_snapshots(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    shard = Shard("s", tmp_path, snapshot_every=5)
    for k in range(12):
        _fill(shard, rng, 1 + 10 * k, 10)
    assert shard.snapshot_lsn == 10
    expected = _state(shard)
    shard.close()
    again = Shard("s", tmp_path, snapshot_every=5)
    assert _state(again) == expected
    again.close()


def test_crash_between_snapshot_and_log_restart_recovers(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    shard = Shard("s", tmp_path)
    _fill(shard, rng, 1, 20)
    _fill(shard, rng, 100, 20)
    old_log = tmp_path / "old.log"
    shutil.copyfile(tmp_path / "wal.log", old_log)  # the full log as it was before the snapshot
    shard.snapshot()
    expected = _state(shard)
    shard.close()
    # As if the process died after the snapshot was renamed into place but before the log was
    # replaced: the old log, with records the snapshot already holds, is back.
    old_log.replace(tmp_path / "wal.log")
    again = Shard("s", tmp_path)
    assert _state(again) == expected
    again.close()


@pytest.mark.parametrize("damage", ["graph", "ids", "exact", "manifest"])
def test_a_damaged_snapshot_stops_recovery_with_the_reason(tmp_path: Path, damage: str) -> None:
    rng = np.random.default_rng(5)
    shard = Shard("s", tmp_path, SMALL_GRAPHS)
    _fill(shard, rng, 1, 50)
    shard.wait_indexed()
    _fill(shard, rng, 100, 5)  # these stay in the exact store
    shard.snapshot()
    shard.close()
    (folder,) = tmp_path.glob("snapshot-*")
    target = {
        "graph": "0.hnsw",
        "ids": "0.graph_ids.npy",
        "exact": "0.exact_vectors.npy",
        "manifest": "manifest.json",
    }[damage]
    data = bytearray((folder / target).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / target).write_bytes(bytes(data))
    with pytest.raises(SnapshotDamaged, match=r"snapshot|checksum"):
        Shard("s", tmp_path)


def test_a_log_without_its_snapshot_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    shard = Shard("s", tmp_path)
    _fill(shard, rng, 1, 5)
    shard.snapshot()
    shard.close()
    for folder in tmp_path.glob("snapshot-*"):
        shutil.rmtree(folder)
    with pytest.raises(SnapshotDamaged, match="missing"):
        Shard("s", tmp_path)


def test_replication_from_before_the_log_needs_the_snapshot(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    shard = Shard("s", tmp_path)
    _fill(shard, rng, 1, 5)
    shard.snapshot()
    _fill(shard, rng, 100, 5)
    assert [r.lsn for r in shard.records_after(1)] == [2]
    with pytest.raises(SnapshotNeeded):
        shard.records_after(0)
    shard.close()


def test_the_service_refuses_to_start_on_a_damaged_snapshot(tmp_path: Path) -> None:
    shard = Shard("s", tmp_path, SMALL_GRAPHS)
    _fill(shard, np.random.default_rng(8), 1, 15)
    shard.wait_indexed()
    shard.snapshot()
    shard.close()
    (folder,) = tmp_path.glob("snapshot-*")
    (folder / "0.hnsw").write_bytes(b"broken")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    result = subprocess.run(
        [sys.executable, "-m", "facegrid.indexer"],
        env={
            **env,
            "FACEGRID_INDEXER_DATA_DIR": str(tmp_path),
            "FACEGRID_INDEXER_METRICS_LISTEN": "",
            "FACEGRID_INDEXER_HTTP_LISTEN": "",
            "FACEGRID_INDEXER_LISTEN": "127.0.0.1:1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "0.hnsw does not match its checksum" in result.stderr
    assert "Traceback" not in result.stderr
