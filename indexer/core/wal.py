"""The shard's write-ahead log: every acknowledged write is here, fsynced, before it is applied.

One append-only file of length-prefixed, CRC-checked records numbered by a log sequence number
(lsn). On open the log is scanned; a torn or corrupt tail (a crash mid-write) is cut off at the
last whole record, which by construction was never acknowledged.

File layout: an 8-byte magic, a u64 base lsn (the snapshot the log continues from), records.
Record layout (little-endian): u32 payload length, u32 CRC-32 of the payload, then the payload:
u8 op, u64 lsn, u16 gallery name length, the name in UTF-8, then per op
  ADD:    u8 upsert, u32 count, u32 dim, count x u64 ids, count*dim x f32 vectors
  DELETE: u32 count, count x u64 ids
  DROP:   nothing more
  CONFIGURE: u32 m, u32 ef_construction, u32 ef_search (the gallery's HNSW parameters)
"""

from __future__ import annotations

import dataclasses
import enum
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from facegrid.files import fsync_path

MAGIC = b"FGWAL\x00\x02\n"
# After the magic: u64 base lsn, the lsn of the snapshot the log continues (0 without one).
_BASE = struct.Struct("<Q")
HEADER_SIZE = len(MAGIC) + _BASE.size
_FRAME = struct.Struct("<II")
_HEAD = struct.Struct("<BQH")
_ADD = struct.Struct("<BII")
_COUNT = struct.Struct("<I")
_HNSW = struct.Struct("<III")

Ids = npt.NDArray[np.uint64]
Vectors = npt.NDArray[np.float32]


class Op(enum.IntEnum):
    ADD = 1
    DELETE = 2
    DROP = 3
    CONFIGURE = 4


@dataclass(frozen=True)
class WalRecord:
    op: Op
    gallery: str
    ids: Ids = field(default_factory=lambda: np.empty(0, np.uint64))
    vectors: Vectors | None = None
    upsert: bool = False
    lsn: int = 0
    # CONFIGURE: (m, ef_construction, ef_search).
    hnsw: tuple[int, int, int] = (0, 0, 0)

    def encode(self) -> bytes:
        name = self.gallery.encode()
        parts = [_HEAD.pack(self.op, self.lsn, len(name)), name]
        if self.op is Op.ADD:
            assert self.vectors is not None
            count, dim = self.vectors.shape
            parts.append(_ADD.pack(self.upsert, count, dim))
            parts.append(self.ids.astype("<u8").tobytes())
            parts.append(self.vectors.astype("<f4").tobytes())
        elif self.op is Op.DELETE:
            parts.append(_COUNT.pack(len(self.ids)))
            parts.append(self.ids.astype("<u8").tobytes())
        elif self.op is Op.CONFIGURE:
            parts.append(_HNSW.pack(*self.hnsw))
        payload = b"".join(parts)
        return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload

    @classmethod
    def decode(cls, payload: bytes) -> WalRecord:
        op, lsn, name_len = _HEAD.unpack_from(payload)
        pos = _HEAD.size
        gallery = payload[pos : pos + name_len].decode()
        pos += name_len
        if op == Op.ADD:
            upsert, count, dim = _ADD.unpack_from(payload, pos)
            pos += _ADD.size
            ids = np.frombuffer(payload, "<u8", count, pos).astype(np.uint64)
            pos += 8 * count
            vectors = np.frombuffer(payload, "<f4", count * dim, pos).astype(np.float32)
            return cls(Op.ADD, gallery, ids, vectors.reshape(count, dim), bool(upsert), lsn)
        if op == Op.DELETE:
            (count,) = _COUNT.unpack_from(payload, pos)
            ids = np.frombuffer(payload, "<u8", count, pos + _COUNT.size).astype(np.uint64)
            return cls(Op.DELETE, gallery, ids, lsn=lsn)
        if op == Op.DROP:
            return cls(Op.DROP, gallery, lsn=lsn)
        if op == Op.CONFIGURE:
            m, ef_construction, ef_search = _HNSW.unpack_from(payload, pos)
            return cls(Op.CONFIGURE, gallery, lsn=lsn, hnsw=(m, ef_construction, ef_search))
        raise ValueError(f"unknown WAL op {op}")


def _scan(f: BinaryIO) -> Iterator[tuple[int, WalRecord]]:
    """Yield (end offset, record) for every whole, intact record from the current position."""
    while True:
        frame = f.read(_FRAME.size)
        if len(frame) < _FRAME.size:
            return
        length, crc = _FRAME.unpack(frame)
        payload = f.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc:
            return
        try:
            record = WalRecord.decode(payload)
        except (ValueError, struct.error, UnicodeDecodeError):
            return
        yield f.tell(), record


class WriteAheadLog:
    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self._fsync = fsync
        self._sync_lock = threading.Lock()
        self.fsyncs = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.stat().st_size == 0:
            self._create(path, 0)
        self._file = path.open("r+b")
        header = self._file.read(HEADER_SIZE)
        if len(header) < HEADER_SIZE or header[: len(MAGIC)] != MAGIC:
            self._file.close()
            raise ValueError(f"{path} is not a FaceGrid write-ahead log (version 2)")
        self.base_lsn: int = int(_BASE.unpack(header[len(MAGIC) :])[0])
        self.last_lsn: int = self.base_lsn
        self.synced_lsn: int = self.base_lsn

    def _create(self, path: Path, base_lsn: int) -> None:
        with path.open("wb") as f:
            f.write(MAGIC + _BASE.pack(base_lsn))
            f.flush()
            os.fsync(f.fileno())

    def restart_after(self, lsn: int) -> None:
        """Replace the log by an empty one continuing from lsn (a durable snapshot's).

        The new file is written and fsynced beside the old one, then renamed over it, so a
        crash leaves either the whole old log or the new empty one.
        """
        fresh = self.path.with_suffix(".new")
        self._create(fresh, lsn)
        # Under the sync lock: a writer about to fsync the old file finds its lsn covered.
        with self._sync_lock:
            self._file.close()
            fresh.replace(self.path)
            fsync_path(self.path.parent)
            self._file = self.path.open("r+b")
            self._file.seek(0, os.SEEK_END)
            self.base_lsn = self.last_lsn = self.synced_lsn = lsn

    def replay(self) -> Iterator[WalRecord]:
        """Yield every intact record, then cut any torn tail; call once, right after opening."""
        end = HEADER_SIZE
        self._file.seek(end)
        for offset, record in _scan(self._file):
            end = offset
            self.last_lsn = record.lsn
            yield record
        self._file.truncate(end)
        self._file.seek(end)
        self._sync(self._file)
        self.synced_lsn = self.last_lsn

    def write(self, record: WalRecord, *, keep_lsn: bool = False) -> WalRecord:
        """Number the record and hand it to the OS, without waiting for the disk.

        keep_lsn: the record carries its lsn already (a follower writing its primary's
        records), and it must be the next one.
        Callers serialise writes (the shard's lock); the record is durable once `sync(lsn)`
        returns.
        """
        if keep_lsn and record.lsn != self.last_lsn + 1:
            raise ValueError(f"record {record.lsn} does not follow {self.last_lsn}")
        numbered = dataclasses.replace(record, lsn=self.last_lsn + 1)
        self._file.write(numbered.encode())
        self._file.flush()
        self.last_lsn = numbered.lsn
        return numbered

    def sync(self, lsn: int) -> None:
        """Return once every record up to lsn is on disk.

        Group commit: writers that arrive while an fsync runs are covered by the next one, so
        concurrent writers share fsyncs instead of queueing one each.
        """
        if not self._fsync:
            self.synced_lsn = max(self.synced_lsn, lsn)
            return
        with self._sync_lock:
            if self.synced_lsn >= lsn:
                return
            # Everything written so far was flushed to the OS before last_lsn moved past it.
            target = self.last_lsn
            os.fsync(self._file.fileno())
            self.fsyncs += 1
            self.synced_lsn = target

    def append(self, record: WalRecord) -> WalRecord:
        """Write the record and wait until it is durable."""
        numbered = self.write(record)
        self.sync(numbered.lsn)
        return numbered

    def read_after(self, lsn: int) -> Iterator[WalRecord]:
        """Records with an lsn above `lsn`, read through a handle of their own."""
        with self.path.open("rb") as f:
            f.seek(HEADER_SIZE)
            for _, record in _scan(f):
                if record.lsn > lsn:
                    yield record

    def close(self) -> None:
        self._file.close()

    def _sync(self, f: BinaryIO) -> None:
        f.flush()
        if self._fsync:
            os.fsync(f.fileno())
