"""The write-ahead log keeps every whole record and drops a torn or corrupt tail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facegrid.indexer.core.wal import MAGIC, Op, WalRecord, WriteAheadLog


def _add(gallery: str, ids: list[int], dim: int = 4) -> WalRecord:
    vectors = np.arange(len(ids) * dim, dtype=np.float32).reshape(len(ids), dim)
    return WalRecord(Op.ADD, gallery, np.array(ids, dtype=np.uint64), vectors, upsert=True)


def _reopen(path: Path) -> tuple[WriteAheadLog, list[WalRecord]]:
    wal = WriteAheadLog(path)
    return wal, list(wal.replay())


def test_records_round_trip_with_increasing_lsns(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal.log")
    assert list(wal.replay()) == []
    wal.append(_add("g", [1, 2**63 + 5]))
    wal.append(WalRecord(Op.DELETE, "g", np.array([1], dtype=np.uint64)))
    wal.append(WalRecord(Op.DROP, "другая"))
    wal.close()

    wal, records = _reopen(tmp_path / "wal.log")
    assert [r.lsn for r in records] == [1, 2, 3]
    assert [r.op for r in records] == [Op.ADD, Op.DELETE, Op.DROP]
    assert records[0].ids.tolist() == [1, 2**63 + 5]
    assert records[0].vectors is not None
    np.testing.assert_array_equal(records[0].vectors, _add("g", [1, 2]).vectors)
    assert records[0].upsert
    assert records[2].gallery == "другая"
    assert wal.append(_add("g", [3])).lsn == 4
    wal.close()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_tail_is_cut_and_log_stays_appendable(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "wal.log"
    wal = WriteAheadLog(path)
    wal.append(_add("g", [1]))
    size_after_first = path.stat().st_size
    wal.append(_add("g", [2]))
    wal.close()

    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-3]
    else:
        data[-1] ^= 0xFF
    path.write_bytes(bytes(data))

    wal, records = _reopen(path)
    assert [r.ids.tolist() for r in records] == [[1]]
    assert path.stat().st_size == size_after_first
    assert wal.append(_add("g", [3])).lsn == 2
    wal.close()
    wal, records = _reopen(path)
    assert [r.ids.tolist() for r in records] == [[1], [3]]
    wal.close()


def test_refuses_a_file_that_is_not_a_log(tmp_path: Path) -> None:
    path = tmp_path / "wal.log"
    path.write_bytes(b"not a wal at all")
    with pytest.raises(ValueError, match="not a FaceGrid write-ahead log"):
        WriteAheadLog(path)
    assert len(MAGIC) == 8


def test_read_after_returns_only_newer_records(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal.log")
    for i in range(5):
        wal.append(_add("g", [i]))
    assert [r.lsn for r in wal.read_after(3)] == [4, 5]
    assert list(wal.read_after(5)) == []
    wal.close()
