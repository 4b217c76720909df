"""`facegrid reindex --check`: do the shards hold what MongoDB says they should?

Per gallery and shard primary, three id sets are compared:
- required: the gallery's active faces whose slot the shard owns;
- allowed: those, plus mid-reshard the faces whose slot is moving to the shard (the reshard
  copies them; their absence is not a fault yet);
- held: what the shard lists.

missing = required - held; orphaned = held - allowed, split into faces MongoDB does not know
(orphaned) and faces another shard owns (misplaced). Vectors of faces present on both sides are
compared byte for byte (float32 as stored), a random sample per shard or all of them (then in
one pass over the records in id order).
Galleries that shards hold but the control plane does not know (a drop that failed) are
reported too when every gallery is checked.

The shards are listed before MongoDB is read. An enrollment writes its record (pending) before
the vector, so a face enrolled during the check is pending, or active and merely reported
missing (repairing that re-adds the same vector); it never looks orphaned, and repair never
deletes a live face's vector. Pending records are neither required nor orphans.

`repair` upserts missing and mismatched vectors from MongoDB, deletes orphaned and misplaced
ones, drops stray galleries and removes stale pending records.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from facegrid.gateway.reindex.pending import PendingOutcome, remove_stale_pending
from facegrid.gateway.reindex.progress import Progress
from facegrid.gateway.reindex.store import FaceRecords
from facegrid.gateway.reindex.topology import ControlPlane, Shards, TopologyError, route_ids
from facegrid.gateway.shards import Route, ShardCopies

_EMPTY = np.empty(0, np.uint64)


@dataclass(frozen=True)
class CheckOptions:
    gallery: str | None = None
    # Compare every vector; otherwise `sample` random ones per shard of each gallery.
    vectors: bool = False
    sample: int = 1000
    repair: bool = False
    pending_grace: float = 60.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.sample < 0:
            raise ValueError(f"sample must not be negative, got {self.sample}")


@dataclass
class ShardDiff:
    shard: str
    required: int
    held: int
    missing: np.ndarray = field(default_factory=lambda: _EMPTY)
    orphaned: np.ndarray = field(default_factory=lambda: _EMPTY)
    misplaced: np.ndarray = field(default_factory=lambda: _EMPTY)
    mismatched: list[int] = field(default_factory=list)
    compared: int = 0
    unrepaired: list[tuple[int, str]] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return len(self.missing) + len(self.orphaned) + len(self.misplaced) + len(self.mismatched)


@dataclass
class GalleryCheck:
    gallery: str
    faces: int
    pending: int
    shards: list[ShardDiff]

    @property
    def differences(self) -> int:
        return sum(s.differences for s in self.shards)


@dataclass
class CheckReport:
    galleries: list[GalleryCheck]
    # (shard, gallery, vectors) for galleries a shard holds that the control plane does not know.
    stray: list[tuple[str, str, int]]
    pending: PendingOutcome
    repaired: bool
    seconds: float
    faces: int = 0

    @property
    def differences(self) -> int:
        return sum(g.differences for g in self.galleries) + len(self.stray)

    @property
    def unrepaired(self) -> int:
        return sum(len(s.unrepaired) for g in self.galleries for s in g.shards)

    @property
    def consistent(self) -> bool:
        """Nothing differs, or everything that did was repaired."""
        if self.repaired:
            return self.unrepaired == 0
        return self.differences == 0


def _differing(stored: dict[int, bytes], held: dict[int, bytes]) -> list[int]:
    return [i for i, vector in held.items() if vector != stored.get(i, b"")]


async def _compare_sample(
    records: FaceRecords, shards: Shards, gallery: str, shard: ShardCopies, ids: list[int]
) -> list[int]:
    if not ids:
        return []
    stored = await records.vectors_of(ids, index=gallery)
    return _differing(stored, await shards.vectors(shard, gallery, ids))


async def _compare_all(
    records: FaceRecords,
    shards: Shards,
    route: Route,
    held: list[np.ndarray],
    diffs: list[ShardDiff],
    *,
    page: int = 2000,
) -> np.ndarray:
    """Compare every vector in one pass over the gallery's records, read in id order (the
    fast way through MongoDB); returns the gallery's active ids."""
    chunks, after = [], 0
    while True:
        batch = await records.vectors_after(route.gallery, after, page)
        if not len(batch.ids):
            break
        chunks.append(batch.ids)
        after = int(batch.ids[-1])
        owner = route_ids(route, batch.ids).owner
        stored = dict(zip(batch.ids.tolist(), batch.vectors, strict=True))
        for index, shard in enumerate(route.shards):
            mine = batch.ids[owner == index]
            present = mine[np.isin(mine, held[index], assume_unique=True)].tolist()
            vectors = await shards.vectors(shard, route.gallery, present)
            diffs[index].mismatched += _differing(stored, vectors)
            diffs[index].compared += len(present)
    return np.concatenate(chunks) if chunks else _EMPTY


async def _repair_shard(
    records: FaceRecords, shards: Shards, gallery: str, shard: ShardCopies, diff: ShardDiff
) -> None:
    wanted = [int(i) for i in diff.missing] + diff.mismatched
    if wanted:
        stored = await records.vectors_of(wanted, active_only=True, index=gallery)
        diff.unrepaired += [(i, "no stored vector") for i in wanted if not stored.get(i)]
        ids = [i for i in wanted if stored.get(i)]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            diff.unrepaired += await shards.upsert(
                shard, gallery, chunk, [stored[i] for i in chunk]
            )
    doomed = np.concatenate([diff.orphaned, diff.misplaced]).tolist()
    if doomed:
        await shards.delete(shard, gallery, doomed)


async def _check_gallery(
    records: FaceRecords,
    shards: Shards,
    route: Route,
    options: CheckOptions,
    rng: random.Random,
    progress: Progress,
) -> GalleryCheck:
    gallery = route.gallery
    held = [await shards.list_ids(shard, gallery) for shard in route.shards]
    diffs = [ShardDiff(shard.name, 0, len(held[i])) for i, shard in enumerate(route.shards)]
    if options.vectors:
        ids = await _compare_all(records, shards, route, held, diffs)
    else:
        ids = await records.ids(gallery)
    pending = np.array(sorted(f.id for f in await records.pending(gallery)), np.uint64)
    known = np.union1d(ids, pending)
    routed = route_ids(route, ids)
    for index, shard in enumerate(route.shards):
        diff = diffs[index]
        required = ids[routed.owner == index]
        allowed = np.union1d(required, ids[routed.target == index])
        diff.required = len(required)
        diff.missing = np.setdiff1d(required, held[index], assume_unique=True)
        extra = np.setdiff1d(np.setdiff1d(held[index], allowed), pending)
        diff.orphaned = np.setdiff1d(extra, known, assume_unique=True)
        diff.misplaced = np.intersect1d(extra, ids, assume_unique=True)
        if not options.vectors:
            present = np.intersect1d(required, held[index], assume_unique=True).tolist()
            if len(present) > options.sample:
                present = sorted(rng.sample(present, options.sample))
            diff.compared = len(present)
            diff.mismatched = await _compare_sample(records, shards, gallery, shard, present)
        if options.repair and diff.differences:
            await _repair_shard(records, shards, gallery, shard, diff)
        progress.advance(len(required))
    return GalleryCheck(gallery, len(ids), len(pending), diffs)


async def check(
    records: FaceRecords,
    plane: ControlPlane,
    shards: Shards,
    options: CheckOptions,
    out: TextIO | None = None,
) -> CheckReport:
    started = time.monotonic()
    rng = random.Random(options.seed)
    await records.reload_sources()
    routes = await plane.routes(options.gallery)
    pending_seen = await records.pending(options.gallery)
    seen_at = time.monotonic()
    # What the shards hold is near enough for a progress line, and cheaper than counting.
    held: dict[str, dict[str, int]] = {}
    for shard in {s.primary: s for r in routes for s in r.shards}.values():
        held[shard.primary] = await shards.galleries(shard)
    total = sum(held[s.primary].get(r.gallery, 0) for r in routes for s in r.shards)
    progress = Progress("check", total, out)
    galleries = [
        await _check_gallery(records, shards, route, options, rng, progress) for route in routes
    ]
    progress.close()

    stray: list[tuple[str, str, int]] = []
    if options.gallery is None:
        placed = {r.gallery for r in routes}
        every_shard = {s.primary: s for r in routes for s in r.shards}
        for shard in every_shard.values():
            for name, count in sorted(held[shard.primary].items()):
                if name in placed or await _exists(plane, name):  # created meanwhile?
                    continue
                stray.append((shard.name, name, count))
                if options.repair:
                    await shards.drop_gallery(shard, name)

    pending = PendingOutcome(seen=len(pending_seen), left=len(pending_seen))
    if options.repair:
        pending = await remove_stale_pending(
            records,
            plane,
            shards,
            pending_seen,
            wait=max(options.pending_grace - (time.monotonic() - seen_at), 0.0),
        )
    return CheckReport(
        galleries,
        stray,
        pending,
        options.repair,
        time.monotonic() - started,
        faces=sum(g.faces for g in galleries),
    )


async def _exists(plane: ControlPlane, gallery: str) -> bool:
    try:
        await plane.routes(gallery)
    except TopologyError as e:
        if e.retry:
            raise
        return False
    return True


def _ids(values: np.ndarray | list[int], limit: int = 10) -> str:
    shown = [str(int(v)) for v in list(values)[:limit]]
    more = f" (+{len(values) - limit} more)" if len(values) > limit else ""
    return ", ".join(shown) + more


def summary(report: CheckReport) -> str:
    lines = [
        f"{'gallery':<24} {'shard':<12} {'faces':>9} {'held':>9} {'missing':>8} "
        f"{'orphaned':>8} {'misplaced':>9} {'vectors':>11}"
    ]
    for g in report.galleries:
        for s in g.shards:
            lines.append(
                f"{g.gallery:<24} {s.shard:<12} {s.required:>9} {s.held:>9} {len(s.missing):>8} "
                f"{len(s.orphaned):>8} {len(s.misplaced):>9} "
                f"{len(s.mismatched):>4}/{s.compared:<6}"
            )
            for label, values in (
                ("missing", s.missing),
                ("orphaned", s.orphaned),
                ("misplaced", s.misplaced),
                ("vector mismatch", s.mismatched),
            ):
                if len(values):
                    lines.append(f"  {label}: {_ids(values)}")
            for face_id, reason in s.unrepaired[:10]:
                lines.append(f"  not repaired: face {face_id}: {reason}")
    for shard, gallery, count in report.stray:
        lines.append(
            f"shard {shard} holds gallery {gallery!r} ({count} vectors) unknown to the "
            "control plane"
        )
    if report.pending.seen:
        lines.append(report.pending.describe())
    rate = report.faces / report.seconds if report.seconds > 0 else 0.0
    verdict = (
        "consistent"
        if report.differences == 0
        else f"{report.differences} differences"
        + (
            f", repaired ({report.unrepaired} could not be)"
            if report.repaired
            else "; run with --repair to fix them"
        )
    )
    lines.append(
        f"Checked {report.faces} faces in {report.seconds:.1f} s ({rate:.0f} faces/s): {verdict}."
    )
    return "\n".join(lines)
