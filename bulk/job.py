"""The job file: one SQLite database holding every image of a bulk enrollment and its outcome.

SQLite because it is atomic and survives a crash at any instant (kill -9, power loss with
`synchronous=FULL`), and because a job of a million images must not be rewritten whole after
each image as a JSON file would be.

An image moves through these states:

    pending --(marked, committed, then POSTed)--> sending --> done | failed
                                                     |
                                                     +--> pending  (proved not enrolled)

`sending` is written and committed *before* the photo leaves, together with the MD5 of the
bytes sent and the run that sent them. So when a run dies between a POST and the record of its
answer, the next run knows exactly which images may have been enrolled without being recorded,
and looks for them through the API (see `recovery.py`) instead of posting them again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
PENDING, SENDING, DONE, FAILED = "pending", "sending", "done", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    meta TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    md5 TEXT,
    run INTEGER,
    sent_at REAL,
    faces TEXT,
    code TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS images_state ON images (state, id);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    api TEXT NOT NULL,
    gallery TEXT NOT NULL,
    mf_selector TEXT NOT NULL,
    watermark INTEGER NOT NULL
);
"""


class JobError(Exception):
    """The job file cannot be used: not a job file, or a newer format."""


@dataclass(frozen=True)
class Image:
    id: int
    path: str
    meta: str
    state: str = PENDING
    attempts: int = 0
    md5: str | None = None
    run: int | None = None
    sent_at: float | None = None
    faces: tuple[int, ...] = ()
    code: str | None = None
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"image": self.path, "meta": self.meta, "state": self.state}
        if self.faces:
            body["faces"] = list(self.faces)
        if self.code is not None:
            body["error"] = {"code": self.code, "reason": self.reason or ""}
        body["attempts"] = self.attempts
        return body


@dataclass(frozen=True)
class Run:
    id: int
    api: str
    gallery: str
    mf_selector: str
    watermark: int


@dataclass(frozen=True)
class Outcome:
    """What became of one POST: faces enrolled, or an error code and reason."""

    faces: tuple[int, ...] = ()
    code: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.code is None


_COLUMNS = "id, path, meta, state, attempts, md5, run, sent_at, faces, code, reason"


def _image(row: sqlite3.Row) -> Image:
    return Image(
        id=row["id"],
        path=row["path"],
        meta=row["meta"],
        state=row["state"],
        attempts=row["attempts"],
        md5=row["md5"],
        run=row["run"],
        sent_at=row["sent_at"],
        faces=tuple(json.loads(row["faces"])) if row["faces"] else (),
        code=row["code"],
        reason=row["reason"],
    )


class Job:
    """A job file, opened for reading and writing. Use one Job from one thread."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        if not create and not path.exists():
            raise JobError(f"no job file at {path} (make one with `prepare`)")
        self.path = path
        # isolation_level=None: every transaction is an explicit BEGIN IMMEDIATE ... COMMIT.
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed `sending` mark survives power loss, not only a killed process.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            version = self._db.execute("SELECT value FROM info WHERE key='version'").fetchone()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise JobError(f"{path} is not a job file: {e}") from e
        if version is None:
            self._db.execute("INSERT INTO info VALUES ('version', ?)", (str(SCHEMA_VERSION),))
        elif int(version[0]) > SCHEMA_VERSION:
            self._db.close()
            raise JobError(f"{path} has job format {version[0]}; this tool reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _write(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(sql, rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- preparing ------------------------------------------------------------------------------

    def add(self, images: Iterable[tuple[str, str]]) -> int:
        """Add (path, meta) pairs; a path already in the job is left as it is. Returns how
        many were added."""
        before = self.count()
        self._write("INSERT OR IGNORE INTO images (path, meta) VALUES (?, ?)", images)
        return self.count() - before

    # -- reading --------------------------------------------------------------------------------

    def count(self, *states: str) -> int:
        if not states:
            return int(self._db.execute("SELECT count(*) FROM images").fetchone()[0])
        marks = ",".join("?" * len(states))
        query = f"SELECT count(*) FROM images WHERE state IN ({marks})"
        return int(self._db.execute(query, states).fetchone()[0])

    def images(self, *states: str) -> Iterator[Image]:
        if states:
            marks = ",".join("?" * len(states))
            query = f"SELECT {_COLUMNS} FROM images WHERE state IN ({marks}) ORDER BY id"
            cursor = self._db.execute(query, states)
        else:
            cursor = self._db.execute(f"SELECT {_COLUMNS} FROM images ORDER BY id")
        for row in cursor:
            yield _image(row)

    def ids(self, *states: str) -> list[int]:
        marks = ",".join("?" * len(states))
        query = f"SELECT id FROM images WHERE state IN ({marks}) ORDER BY id"
        return [int(r[0]) for r in self._db.execute(query, states)]

    def get(self, ids: Sequence[int]) -> list[Image]:
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM images WHERE id IN ({marks})", ids)
        found = {r["id"]: _image(r) for r in rows}
        return [found[i] for i in ids]

    def claimed_faces(self) -> set[int]:
        """Every face id some image of this job is recorded to have enrolled."""
        claimed: set[int] = set()
        for (faces,) in self._db.execute("SELECT faces FROM images WHERE faces IS NOT NULL"):
            claimed.update(json.loads(faces))
        return claimed

    def run(self, run_id: int) -> Run:
        row = self._db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return Run(row["id"], row["api"], row["gallery"], row["mf_selector"], row["watermark"])

    # -- running --------------------------------------------------------------------------------

    def start_run(self, api: str, gallery: str, mf_selector: str, watermark: int) -> int:
        self._db.execute("BEGIN IMMEDIATE")
        cursor = self._db.execute(
            "INSERT INTO runs (started, api, gallery, mf_selector, watermark) "
            "VALUES (?, ?, ?, ?, ?)",
            (time.time(), api, gallery, mf_selector, watermark),
        )
        self._db.execute("COMMIT")
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def mark_sending(self, marks: Sequence[tuple[int, str]], run: int) -> None:
        """Commit (image id, md5 of its bytes) as being sent by `run`: before any is POSTed."""
        now = time.time()
        self._write(
            "UPDATE images SET state='sending', md5=?, run=?, sent_at=?, attempts=attempts+1 "
            "WHERE id=?",
            [(md5, run, now, image_id) for image_id, md5 in marks],
        )

    def record(self, outcomes: Sequence[tuple[int, Outcome]]) -> None:
        """Commit the outcomes of POSTs: done with their face ids, or failed with the code."""
        self._write(
            "UPDATE images SET state=?, faces=?, code=?, reason=? WHERE id=?",
            [
                (
                    DONE if o.ok else FAILED,
                    json.dumps(list(o.faces)) if o.ok else None,
                    o.code,
                    o.reason,
                    image_id,
                )
                for image_id, o in outcomes
            ],
        )

    def release(self, ids: Sequence[int]) -> None:
        """Images proved not to be enrolled: back to pending, to be sent again."""
        self._write("UPDATE images SET state='pending' WHERE id=?", [(i,) for i in ids])

    def retry_failed(self) -> int:
        """Failed images back to pending (`run --failed`); returns how many."""
        self._db.execute("BEGIN IMMEDIATE")
        cursor = self._db.execute(
            "UPDATE images SET state='pending', code=NULL, reason=NULL, attempts=0 "
            "WHERE state='failed'"
        )
        self._db.execute("COMMIT")
        return cursor.rowcount
