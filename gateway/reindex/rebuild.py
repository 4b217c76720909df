"""Rebuild the shards' vectors from MongoDB, gallery by gallery, resumably.

Each gallery's active faces are read in id order, `batch` at a time (the next batch is read
while the current one is written), routed by the gallery's placement and upserted on every
shard that must hold them (mid-reshard, the slot's owner and its target). After each batch the
last id done is checkpointed in MongoDB (`reindex_checkpoints`): a run that is interrupted, at
any instant, resumes after that id and redoes at most the one batch that was in flight, which
upserts make harmless. A completed run clears its checkpoints, so the next run starts over.

A checkpoint is only trusted under the placement it was made with: if the gallery's placement
version changed since (slots moved), the gallery starts over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TextIO

from facegrid.gateway.reindex.pending import PendingOutcome, remove_stale_pending
from facegrid.gateway.reindex.progress import Progress
from facegrid.gateway.reindex.store import Checkpoint, FaceRecords, FaceVectors
from facegrid.gateway.reindex.topology import ControlPlane, Shards, route_ids
from facegrid.gateway.shards import Route

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RebuildOptions:
    gallery: str | None = None
    batch: int = 500
    restart: bool = False
    # Drop the gallery on its shards before a fresh (not a resumed) rebuild, as the seed's
    # procedure deletes the shards' files first: leaves no stale vector, but searches see a
    # partly rebuilt gallery meanwhile.
    drop: bool = False
    pending_grace: float = 60.0
    # Stop after this many faces (a partial run, resumed by the next; for tests and trials).
    limit: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= 10_000:
            raise ValueError(f"batch must be in 1..10000, got {self.batch}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must not be negative, got {self.limit}")


@dataclass
class GalleryRebuild:
    gallery: str
    total: int = 0
    resumed_from: int = 0  # faces done by earlier, interrupted runs
    written: int = 0  # faces upserted by this run
    refused: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    finished: bool = False


@dataclass
class RebuildReport:
    galleries: list[GalleryRebuild]
    pending: PendingOutcome
    seconds: float

    @property
    def finished(self) -> bool:
        return all(g.finished for g in self.galleries)

    @property
    def written(self) -> int:
        return sum(g.written for g in self.galleries)


async def _write_batch(shards: Shards, route: Route, batch: FaceVectors) -> list[tuple[int, str]]:
    refused = [
        (int(i), "no stored vector") for i, v in zip(batch.ids, batch.vectors, strict=True) if not v
    ]
    routed = route_ids(route, batch.ids)
    per_shard: dict[int, list[int]] = defaultdict(list)
    for k, (owner, target) in enumerate(
        zip(routed.owner.tolist(), routed.target.tolist(), strict=True)
    ):
        if not batch.vectors[k]:
            continue
        per_shard[owner].append(k)
        if target != owner:
            per_shard[target].append(k)
    outcomes = await asyncio.gather(
        *(
            shards.upsert(
                route.shards[s],
                route.gallery,
                [int(batch.ids[k]) for k in rows],
                [batch.vectors[k] for k in rows],
            )
            for s, rows in per_shard.items()
        )
    )
    seen = {i for i, _ in refused}
    for outcome in outcomes:
        for face_id, reason in outcome:
            if face_id not in seen:
                seen.add(face_id)
                refused.append((face_id, reason))
    return refused


async def _rebuild_gallery(
    records: FaceRecords,
    shards: Shards,
    route: Route,
    options: RebuildOptions,
    budget: list[int],
    out: TextIO | None,
) -> GalleryRebuild:
    gallery = route.gallery
    report = GalleryRebuild(gallery)
    started = time.monotonic()
    point = None if options.restart else await records.checkpoint(gallery)
    if point is not None and point.placement_version != route.version:
        log.warning(
            "gallery %s: placement changed since the checkpoint (version %d, now %d); "
            "starting it over",
            gallery,
            point.placement_version,
            route.version,
        )
        point = None
    report.total = await records.count(gallery)
    if point is not None and point.done:
        report.resumed_from, report.finished = report.total, True
        return report
    if point is None:
        if options.drop:
            for shard in route.shards:
                await shards.drop_gallery(shard, gallery)
        point = Checkpoint(gallery, 0, route.version, False)
        await records.save_checkpoint(point)
    elif point.last_id:
        report.resumed_from = await records.count(gallery, up_to=point.last_id)

    progress = Progress(f"reindex {gallery}", report.total, out, done=report.resumed_from)
    last_id = point.last_id

    def read(after: int) -> asyncio.Task[FaceVectors]:
        size = options.batch if budget[0] < 0 else min(options.batch, budget[0])
        return asyncio.ensure_future(records.vectors_after(gallery, after, size))

    exhausted = False
    next_read = read(last_id) if budget[0] != 0 else None
    try:
        while next_read is not None:
            batch, next_read = await next_read, None
            if not len(batch.ids):
                exhausted = True
                break
            if budget[0] > 0:
                budget[0] -= len(batch.ids)
            last_id = int(batch.ids[-1])
            # Read ahead while this batch is written.
            next_read = read(last_id) if budget[0] != 0 else None
            report.refused += await _write_batch(shards, route, batch)
            report.written += len(batch.ids)
            await records.save_checkpoint(Checkpoint(gallery, last_id, route.version, False))
            progress.advance(len(batch.ids))
    finally:
        if next_read is not None:
            next_read.cancel()
    progress.close()
    report.finished = exhausted
    if report.finished:
        await records.save_checkpoint(Checkpoint(gallery, last_id, route.version, True))
    report.seconds = time.monotonic() - started
    return report


async def rebuild(
    records: FaceRecords,
    plane: ControlPlane,
    shards: Shards,
    options: RebuildOptions,
    out: TextIO | None = None,
) -> RebuildReport:
    """Rebuild every gallery (or options.gallery); `out` gets the progress lines."""
    started = time.monotonic()
    await records.reload_sources()
    routes = await plane.routes(options.gallery)
    if options.restart:
        await records.clear_checkpoints([r.gallery for r in routes])
    pending_seen = await records.pending(options.gallery)
    seen_at = time.monotonic()
    budget = [-1 if options.limit is None else options.limit]
    reports = [
        await _rebuild_gallery(records, shards, route, options, budget, out) for route in routes
    ]
    report = RebuildReport(reports, PendingOutcome(), 0.0)
    if report.finished:
        # A partial run (limit) leaves the pending records to the run that completes it.
        report.pending = await remove_stale_pending(
            records,
            plane,
            shards,
            pending_seen,
            wait=max(options.pending_grace - (time.monotonic() - seen_at), 0.0),
        )
        await records.clear_checkpoints([r.gallery for r in routes])
    report.seconds = time.monotonic() - started
    return report


def summary(report: RebuildReport) -> str:
    lines = [f"{'gallery':<24} {'faces':>9} {'resumed':>9} {'written':>9} {'refused':>8}  state"]
    for g in report.galleries:
        lines.append(
            f"{g.gallery:<24} {g.total:>9} {g.resumed_from:>9} {g.written:>9} "
            f"{len(g.refused):>8}  {'done' if g.finished else 'interrupted'}"
        )
        for face_id, reason in g.refused[:10]:
            lines.append(f"  face {face_id} not indexed: {reason}")
        if len(g.refused) > 10:
            lines.append(f"  ... and {len(g.refused) - 10} more")
    rate = report.written / report.seconds if report.seconds > 0 else 0.0
    lines.append(f"Wrote {report.written} faces in {report.seconds:.1f} s ({rate:.0f} faces/s).")
    if report.pending.seen:
        lines.append(report.pending.describe())
    if not report.finished:
        lines.append("Not finished: run `facegrid reindex` again to resume.")
    return "\n".join(lines)


def succeeded(report: RebuildReport) -> bool:
    return report.finished and not any(g.refused for g in report.galleries)


__all__ = ["RebuildOptions", "RebuildReport", "rebuild", "succeeded", "summary"]
