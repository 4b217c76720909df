"""What a crashed enrollment leaves behind: a face record still `pending`, and perhaps its vector
on some of its shards.

An enrollment keeps a record pending only while it writes the vectors (a few shard calls), so a
record still pending after a grace period, counted from when this run first saw it, belongs to
an enrollment that died. It is removed as the gateway itself undoes a failed enrollment: the
record first (only if still pending, so an enrollment that was merely slow and activated it
meanwhile keeps its face), then its vectors on every shard of its galleries. The client of that
enrollment never got the face's id, so nothing refers to it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np

from facegrid.gateway.reindex.store import FaceRecords, PendingFace
from facegrid.gateway.reindex.topology import ControlPlane, Shards, TopologyError, route_ids

log = logging.getLogger(__name__)


@dataclass
class PendingOutcome:
    seen: int = 0  # pending when the run started
    removed: int = 0  # still pending after the grace period, and removed
    left: int = 0  # activated by a slow enrollment meanwhile, or not handled in this run

    def describe(self) -> str:
        return (
            f"Pending records of interrupted enrollments: {self.seen} seen, "
            f"{self.removed} removed, {self.left} left."
        )


async def remove_stale_pending(
    records: FaceRecords,
    plane: ControlPlane,
    shards: Shards,
    seen: list[PendingFace],
    *,
    wait: float,
) -> PendingOutcome:
    """Remove the records of `seen` that are still pending after `wait` seconds."""
    outcome = PendingOutcome(seen=len(seen))
    if not seen:
        return outcome
    if wait > 0:
        log.info("waiting %.0f s for %d pending enrollments to finish", wait, len(seen))
        await asyncio.sleep(wait)
    still = {f.id for f in await records.pending()}
    routes = {}
    for face in seen:
        if face.id not in still or not await records.remove_pending(face.id):
            outcome.left += 1
            continue
        outcome.removed += 1
        for gallery in face.galleries:
            if gallery not in routes:
                try:
                    routes[gallery] = (await plane.routes(gallery))[0]
                except TopologyError as e:
                    if e.retry:
                        raise
                    continue  # the gallery is gone, and its vectors with it
            route = routes[gallery]
            routed = route_ids(route, np.array([face.id], np.uint64))
            for index in {int(routed.owner[0]), int(routed.target[0])}:
                await shards.delete(route.shards[index], gallery, [face.id])
    return outcome
