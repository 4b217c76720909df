"""`facegrid regenerate`: new face vectors for stored faces (the seed's findface-regenerate).

Point it at an extractor serving the new model bundle. For each active face it re-extracts the
vector from the stored normalized face (or, with `redetect`, detects again on the stored
original photo, takes the face that overlaps the stored box most, and replaces the normalized
face and box too), writes the vector to the face's shards, then to MongoDB with the model's
name. Faces MongoDB already records with the extractor's model are skipped, so a rerun resumes;
a checkpoint (last id done, per `every`/`offset` split) makes it skip even the reading. With
`redetect` (a new detector, the seed's `--regenerate normalized,thumbs`) no face is skipped for
its model, and only the checkpoint resumes an interrupted run.

Shards are written before MongoDB: a crash in between leaves MongoDB naming the old model, so
the face is done again, never left with a vector of one model recorded as the other's. While it
runs, a gallery holds vectors of both models: run it with enrollments paused. `facegrid migrate`
does the same without stopping anything; once a gallery has been migrated (its index is another
than its name), regenerate refuses to run, since it writes to the galleries' own indexes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
from bson.binary import Binary
from pymongo import AsyncMongoClient, UpdateOne

from facegrid.gateway.core.errors import ApiError
from facegrid.gateway.core.model import BBox
from facegrid.gateway.core.ports import MediaStore, Wanted
from facegrid.gateway.extractor_client import ExtractorClient
from facegrid.gateway.index_plans import COLLECTION
from facegrid.gateway.mongo import ACTIVE, MEDIA_PREFIX, GridFsMedia
from facegrid.gateway.reindex.progress import Progress
from facegrid.gateway.reindex.store import id_window, newest_face_id
from facegrid.gateway.reindex.topology import ControlPlane, Shards, TopologyError, route_ids

Doc = dict[str, Any]
CHECKPOINTS = "regenerate_checkpoints"
# A re-detected face must overlap the stored box at least this much to be the same face.
MIN_IOU = 0.5


@dataclass(frozen=True)
class RegenerateOptions:
    batch: int = 64
    parallel: int = 4
    first_id: int = 1
    last_id: int | None = None
    # Split the work: this run takes the faces whose id % every == offset.
    every: int = 1
    offset: int = 0
    redetect: bool = False
    restart: bool = False
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.batch < 1 or self.parallel < 1:
            raise ValueError("--batch and --parallel must be at least 1")
        if self.every < 1 or not 0 <= self.offset < self.every:
            raise ValueError("--every-other N takes --offset 0..N-1")


@dataclass
class RegenerateReport:
    model: str = ""
    done: int = 0
    skipped: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0


def iou(a: BBox, b: BBox) -> float:
    x1, y1 = max(a.x1, b.x1), max(a.y1, b.y1)
    x2, y2 = min(a.x2, b.x2), min(a.y2, b.y2)
    inner = max(0, x2 - x1) * max(0, y2 - y1)
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inner
    return inner / union if union > 0 else 0.0


class Regenerator:
    def __init__(
        self,
        client: AsyncMongoClient[Doc],
        db: str,
        extractor: ExtractorClient,
        plane: ControlPlane,
        shards: Shards,
        options: RegenerateOptions,
        media: MediaStore | None = None,
    ) -> None:
        """media: where the stored photos and faces are (default: GridFS in db)."""
        self._faces = client[db]["faces"]
        self._counters = client[db]["counters"]
        self._checkpoints = client[db][CHECKPOINTS]
        self._plans = client[db][COLLECTION]
        self._media = media or GridFsMedia(client, db)
        self._extractor = extractor
        self._plane = plane
        self._shards = shards
        self._options = options
        self._key = f"{options.every}:{options.offset}"

    async def run(self, out: TextIO | None = None) -> RegenerateReport:
        async for plan in self._plans.find({}):
            if plan.get("shadow") or plan.get("previous") or plan["active"]["index"] != plan["_id"]:
                raise TopologyError(
                    f"gallery {plan['_id']!r} is being or was migrated to another index: "
                    "use `facegrid migrate`",
                    retry=False,
                )
        o = self._options
        report = RegenerateReport()
        started = time.monotonic()
        after = o.first_id - 1
        saved = None if o.restart else await self._checkpoints.find_one({"_id": self._key})
        if saved is not None:
            after = max(after, int(saved["after"]))
            report.model = str(saved.get("model", ""))
        query: Doc = {"state": ACTIVE}
        ids: Doc = {} if o.every == 1 else {"$mod": [o.every, o.offset]}
        if o.last_id is not None:
            ids["$lte"] = o.last_id
        total = await self._faces.count_documents({**query, "_id": {**ids, "$gt": after}})
        progress = Progress("regenerate", total, out)
        while not report.stopped:
            newest = await newest_face_id(self._counters)
            if o.last_id is not None:
                newest = min(newest, o.last_id)
            docs = await id_window(
                self._faces, query, after, o.batch, _PROJECTION, newest=newest, ids=ids
            )
            if not docs:
                break
            await self._batch(docs, report)
            after = int(docs[-1]["_id"])
            await self._checkpoints.update_one(
                {"_id": self._key}, {"$set": {"after": after, "model": report.model}}, upsert=True
            )
            progress.advance(len(docs))
            if o.limit is not None and report.done >= o.limit:
                report.stopped = True
        if not report.stopped:
            await self._checkpoints.delete_one({"_id": self._key})
        progress.close()
        report.seconds = time.monotonic() - started
        return report

    async def _batch(self, docs: list[Doc], report: RegenerateReport) -> None:
        if not report.model:
            # Which model the extractor serves: what it makes of the first face it can read.
            for doc in docs:
                first = await self._extract(doc)
                if isinstance(first, tuple):
                    report.model = first[1]
                    break
        if self._options.redetect:
            todo = docs
        else:
            todo = [d for d in docs if d.get("model") != report.model]
        report.skipped += len(docs) - len(todo)
        if not todo:
            return
        gate = asyncio.Semaphore(self._options.parallel)

        async def one(doc: Doc) -> tuple[Doc, tuple[bytes, str, Doc] | str]:
            async with gate:
                return doc, await self._extract(doc)

        results = await asyncio.gather(*(one(d) for d in todo))
        fresh: list[tuple[Doc, bytes, Doc]] = []
        for doc, result in results:
            if isinstance(result, str):
                report.failed.append((int(doc["_id"]), result))
            elif result[1] == report.model:
                fresh.append((doc, result[0], result[2]))
            else:
                report.failed.append((int(doc["_id"]), f"the extractor changed model: {result[1]}"))
        if not fresh:
            return
        await self._write_shards(fresh)
        # One request for the batch's records, not one per face.
        await self._faces.bulk_write(
            [
                UpdateOne(
                    {"_id": doc["_id"]},
                    {"$set": {"facen": Binary(facen), "model": report.model, **changes}},
                )
                for doc, facen, changes in fresh
            ],
            ordered=False,
        )
        report.done += len(fresh)

    async def _extract(self, doc: Doc) -> tuple[bytes, str, Doc] | str:
        """(vector, model, other fields to change) or the reason it could not be made."""
        try:
            if not self._options.redetect:
                chip = await self._load(str(doc.get("normalized", "")))
                if chip is None:
                    return "no stored normalized face (use --redetect)"
                extracted = await self._extractor.extract_chip(chip, Wanted())
                if not extracted.faces:
                    return "no face in the stored normalized face"
                return extracted.faces[0].facen, extracted.model, {}
            photo = await self._load(str(doc.get("stored_photo") or doc.get("photo", "")))
            if photo is None:
                return "no stored original photo"
            box = doc["bbox"]
            stored = BBox(box["x1"], box["y1"], box["x2"], box["y2"])
            detections = (await self._extractor.detect(photo)).faces
            best = max(detections, key=lambda d: iou(d.bbox, stored), default=None)
            if best is None or iou(best.bbox, stored) < MIN_IOU:
                return "the face is not found again on its photo"
            extracted = await self._extractor.extract(photo, [best], Wanted(normalized=True))
            face = extracted.faces[0]
            changes: Doc = {"bbox": face.bbox.as_dict()}
            if face.normalized:
                name = f"{int(doc['_id'])}_norm.png"
                await self._media.delete(name)
                stored_name = await self._media.put(name, face.normalized, "image/png")
                changes.update(normalized=stored_name, thumbnail=stored_name)
            return face.facen, extracted.model, changes
        except ApiError as e:
            return f"{e.code}: {e}"

    async def _load(self, media: str) -> bytes | None:
        if not media.startswith(MEDIA_PREFIX):
            return None
        found = await self._media.get(media.removeprefix(MEDIA_PREFIX))
        return None if found is None else found[0]

    async def _write_shards(self, fresh: Sequence[tuple[Doc, bytes, Doc]]) -> None:
        """Upsert each vector on its owner shard (and target, mid-reshard) in every gallery."""
        routes = {r.gallery: r for r in await self._plane.routes()}
        by_gallery: dict[str, list[tuple[int, bytes]]] = {}
        for doc, facen, _ in fresh:
            for gallery in [*doc.get("galleries", ()), *doc.get("hidden_galleries", ())]:
                by_gallery.setdefault(gallery, []).append((int(doc["_id"]), facen))
        for gallery, items in by_gallery.items():
            route = routes.get(gallery)
            if route is None:
                continue  # a gallery deleted meanwhile
            ids = np.array([i for i, _ in items], dtype=np.uint64)
            routed = route_ids(route, ids)
            for index in sorted(set(routed.owner.tolist()) | set(routed.target.tolist())):
                mine = [
                    k
                    for k in range(len(items))
                    if routed.owner[k] == index or routed.target[k] == index
                ]
                await self._shards.upsert(
                    route.shards[index],
                    gallery,
                    [items[k][0] for k in mine],
                    [items[k][1] for k in mine],
                )


_PROJECTION = {
    "model": 1,
    "normalized": 1,
    "photo": 1,
    "stored_photo": 1,
    "bbox": 1,
    "galleries": 1,
    "hidden_galleries": 1,
}


def summary(report: RegenerateReport) -> str:
    rate = report.done / report.seconds if report.seconds else 0.0
    lines = [
        f"regenerated {report.done} faces with {report.model or 'the extractor model'} "
        f"({rate:.1f} faces/s); {report.skipped} already had it; {len(report.failed)} failed"
    ]
    lines += [f"  face {face_id}: {reason}" for face_id, reason in report.failed[:20]]
    if report.stopped:
        lines.append("stopped by --limit; run again to go on")
    return "\n".join(lines)
