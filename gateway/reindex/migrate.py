"""`facegrid migrate`: move galleries to another model without stopping searches or enrollment.

For each gallery, with an extractor serving the new model:

1. **Shadow.** An index for the new model is created (an internal gallery of the control plane,
   `shadow_index(gallery, model)`) and recorded as the gallery's shadow in `gallery_indexes`.
   The tool then waits `settle` seconds, longer than gateways keep plans, so that every gateway
   writes new faces of the gallery to the shadow too (with the new model's vector, from the
   aligned face; a gateway without an extractor of the new model leaves that to step 3).
2. **Build.** Every face of the gallery gets the new model's vector, made from its stored
   aligned face (kept in MongoDB under `vectors.<model>`) and written to the shadow index,
   in id order with a checkpoint, so an interrupted run resumes where it stopped.
3. **Catch up.** The shadow's ids are compared with MongoDB's: faces missing from it are built,
   faces deleted meanwhile are taken out, until both agree.
4. **Switch.** One MongoDB write makes the shadow the gallery's active index and the old index
   its `previous`. Gateways pick it up within their refresh time; each search asks one index
   with a query vector of that index's model, so no search mixes models. The old index goes on
   being written (every face keeps both vectors), so `rollback` loses nothing. A last catch-up
   adds faces a gateway wrote only to the old index before it saw the switch.
5. **Confirm** (a separate command, once the new model is trusted): the old index is emptied
   (deleted, if it was a shadow itself) and no longer written.

Galleries are migrated one at a time; `status` reports each one's stage and progress.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
from bson.binary import Binary
from pymongo import AsyncMongoClient, UpdateOne

from facegrid.gateway.core.errors import ApiError
from facegrid.gateway.core.indexes import SHADOW_PREFIX, model_key, shadow_index
from facegrid.gateway.core.ports import MediaStore, Wanted
from facegrid.gateway.extractor_client import ExtractorClient
from facegrid.gateway.index_plans import COLLECTION, plan_of
from facegrid.gateway.mongo import ACTIVE, MEDIA_PREFIX, GridFsMedia
from facegrid.gateway.reindex.progress import Progress
from facegrid.gateway.reindex.store import gallery_field, id_window, newest_face_id
from facegrid.gateway.reindex.topology import ControlPlane, Shards, TopologyError, route_ids
from facegrid.gateway.shards import Route

Doc = dict[str, Any]
BUILDING, READY = "building", "ready"
# Catch-up rounds before giving up on a gallery that keeps changing (a rerun goes on).
MAX_ROUNDS = 8


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class MigrateOptions:
    galleries: tuple[str, ...] = ()
    batch: int = 64
    parallel: int = 4
    # Seconds to wait after a plan changes: longer than the gateways' index_refresh.
    settle: float = 3.0
    switch: bool = True

    def __post_init__(self) -> None:
        if self.batch < 1 or self.parallel < 1:
            raise ValueError("--batch and --parallel must be at least 1")
        if self.settle < 0:
            raise ValueError("--settle must not be negative")


@dataclass
class GalleryMigration:
    gallery: str
    # "switched", "ready" (complete, not switched), "already" (on the model before), "failed"
    outcome: str = ""
    built: int = 0
    removed: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class MigrateReport:
    model: str = ""
    galleries: list[GalleryMigration] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def built(self) -> int:
        return sum(g.built for g in self.galleries)

    @property
    def succeeded(self) -> bool:
        return all(g.outcome in ("switched", "ready", "already") for g in self.galleries)


class Migrator:
    def __init__(
        self,
        client: AsyncMongoClient[Doc],
        db: str,
        extractor: ExtractorClient,
        plane: ControlPlane,
        shards: Shards,
        options: MigrateOptions,
        media: MediaStore | None = None,
    ) -> None:
        """media: where the stored photos and faces are (default: GridFS in db)."""
        self._faces = client[db]["faces"]
        self._counters = client[db]["counters"]
        self._plans = client[db][COLLECTION]
        self._media = media or GridFsMedia(client, db)
        self._extractor = extractor
        self._plane = plane
        self._shards = shards
        self._options = options

    # -- the whole run --------------------------------------------------------------------------

    async def run(self, out: TextIO | None = None) -> MigrateReport:
        started = time.monotonic()
        report = MigrateReport(model=await self._extractor.model())
        galleries = await self._galleries()
        for gallery in galleries:
            report.galleries.append(await self._migrate(gallery, report.model, out))
        report.seconds = time.monotonic() - started
        return report

    async def _galleries(self) -> list[str]:
        names = [r.gallery for r in await self._plane.routes()]
        known = [n for n in names if not n.startswith(SHADOW_PREFIX)]
        if not self._options.galleries:
            return known
        unknown = sorted(set(self._options.galleries) - set(known))
        if unknown:
            raise TopologyError(f"no such gallery: {', '.join(unknown)}", retry=False)
        return list(self._options.galleries)

    async def _migrate(self, gallery: str, model: str, out: TextIO | None) -> GalleryMigration:
        result = GalleryMigration(gallery)
        doc = await self._pinned(gallery, model)
        if doc["active"]["model"] == model:
            result.outcome = "already"
            return result
        shadow = doc.get("shadow")
        if not shadow or shadow["model"] != model:
            shadow = await self._open_shadow(gallery, model, doc)
        index = str(shadow["index"])
        if shadow["state"] == BUILDING:
            await self._build(gallery, model, index, int(shadow.get("after", 0)), result, out)
        # A ready shadow too: a gateway without the new model's extractor may have added faces
        # to the gallery since it was built.
        await self._catch_up(gallery, model, index, result)
        if result.failed:
            result.outcome = "failed"
            return result
        if shadow["state"] == BUILDING:
            await self._plans.update_one(
                {"_id": gallery, "shadow.index": index}, {"$set": {"shadow.state": READY}}
            )
        if not self._options.switch:
            result.outcome = "ready"
            return result
        await self._switch(gallery, index)
        await asyncio.sleep(self._options.settle)
        await self._catch_up(gallery, model, index, result)
        result.outcome = "failed" if result.failed else "switched"
        return result

    async def _pinned(self, gallery: str, model: str) -> Doc:
        """The gallery's plan, recording the one it has implicitly (its own index, with the
        model its faces were made with) if it has none yet."""
        doc = await self._plans.find_one({"_id": gallery})
        if doc is not None:
            return doc
        face = await self._faces.find_one(
            {gallery_field(gallery): gallery, "state": ACTIVE}, {"model": 1}
        ) or await self._faces.find_one({}, {"model": 1}, sort=[("_id", -1)])
        current = str(face["model"]) if face else model
        await self._plans.update_one(
            {"_id": gallery},
            {"$setOnInsert": {"active": {"model": current, "index": gallery}}},
            upsert=True,
        )
        found = await self._plans.find_one({"_id": gallery})
        assert found is not None
        return found

    async def _open_shadow(self, gallery: str, model: str, doc: Doc) -> Doc:
        index = shadow_index(gallery, model)
        stale = doc.get("shadow")
        if stale:  # a shadow for yet another model, abandoned: it goes
            await self._plans.update_one({"_id": gallery}, {"$unset": {"shadow": ""}})
            await self._plane.delete_gallery(str(stale["index"]))
        await self._plane.create_gallery(index)
        shadow = {
            "model": model,
            "index": index,
            "state": BUILDING,
            "after": 0,
            "built": 0,
            "total": await self._count(gallery),
            "started": dt.datetime.now(dt.UTC),
        }
        await self._plans.update_one({"_id": gallery}, {"$set": {"shadow": shadow}})
        # From here on every gateway writes the gallery's new faces to the shadow too.
        await asyncio.sleep(self._options.settle)
        return shadow

    async def _count(self, gallery: str) -> int:
        return await self._faces.count_documents({gallery_field(gallery): gallery, "state": ACTIVE})

    # -- building -------------------------------------------------------------------------------

    async def _build(
        self,
        gallery: str,
        model: str,
        index: str,
        after: int,
        result: GalleryMigration,
        out: TextIO | None,
    ) -> None:
        query: Doc = {gallery_field(gallery): gallery, "state": ACTIVE}
        total = await self._faces.count_documents(query)
        done = await self._faces.count_documents({**query, "_id": {"$lte": after}})
        progress = Progress(f"migrate {gallery}", total, out, done=done)
        while True:
            newest = await newest_face_id(self._counters)
            docs = await id_window(
                self._faces, query, after, self._options.batch, _PROJECTION, newest=newest
            )
            if not docs:
                break
            result.built += await self._write(model, index, docs, result)
            after = int(docs[-1]["_id"])
            await self._plans.update_one(
                {"_id": gallery, "shadow.index": index},
                {
                    "$set": {"shadow.after": after, "shadow.total": total},
                    "$inc": {"shadow.built": len(docs)},
                },
            )
            progress.advance(len(docs))
        progress.close()

    async def _write(
        self, model: str, index: str, docs: list[Doc], result: GalleryMigration
    ) -> int:
        """Give the faces the model's vector (stored ones are reused) and write them to the
        index; returns how many were written."""
        key = model_key(model)
        gate = asyncio.Semaphore(self._options.parallel)

        async def vector_of(doc: Doc) -> bytes | str:
            if doc.get("model") == model and doc.get("facen"):
                return bytes(doc["facen"])
            stored = doc.get("vectors", {}).get(key)
            if stored is not None:
                return bytes(stored)
            async with gate:
                return await self._extract(doc)

        made = await asyncio.gather(*(vector_of(d) for d in docs))
        fresh = [(d, v) for d, v in zip(docs, made, strict=True) if isinstance(v, bytes)]
        for doc, reason in zip(docs, made, strict=True):
            if isinstance(reason, str):
                result.failed.append((int(doc["_id"]), reason))
        new = [
            UpdateOne({"_id": d["_id"]}, {"$set": {f"vectors.{key}": Binary(v)}})
            for d, v in fresh
            if not (d.get("model") == model or key in d.get("vectors", {}))
        ]
        if new:
            await self._faces.bulk_write(new, ordered=False)
        route = (await self._plane.routes(index))[0]
        refused = await _upsert(self._shards, route, [(int(d["_id"]), v) for d, v in fresh])
        result.failed += refused
        return len(fresh) - len(refused)

    async def _extract(self, doc: Doc) -> bytes | str:
        """The model's vector of the face, from its stored aligned face; or why not."""
        media = str(doc.get("normalized", ""))
        if not media.startswith(MEDIA_PREFIX):
            return "no stored normalized face"
        found = await self._media.get(media.removeprefix(MEDIA_PREFIX))
        if found is None:
            return "the stored normalized face is missing"
        try:
            extracted = await self._extractor.extract_chip(found[0], Wanted())
        except ApiError as e:
            return f"{e.code}: {e}"
        if not extracted.faces:
            return "no face in the stored normalized face"
        return extracted.faces[0].facen

    # -- catching up ----------------------------------------------------------------------------

    async def _catch_up(
        self, gallery: str, model: str, index: str, result: GalleryMigration
    ) -> None:
        """Until the index holds exactly the gallery's active faces: build the missing, take
        out the deleted. Faces mid-enrollment (pending) are neither."""
        field_ = gallery_field(gallery)
        for _ in range(MAX_ROUNDS):
            route = (await self._plane.routes(index))[0]
            held = await _held(self._shards, route)
            active = await self._ids({field_: gallery, "state": ACTIVE})
            recorded = await self._ids({field_: gallery})
            missing = sorted(set(active) - held - {f for f, _ in result.failed})
            extra = sorted(held - set(recorded))
            if not missing and not extra:
                return
            for start in range(0, len(missing), self._options.batch):
                chunk = missing[start : start + self._options.batch]
                docs = await self._faces.find({"_id": {"$in": chunk}}, _PROJECTION).to_list()
                result.built += await self._write(model, index, docs, result)
            if extra:
                result.removed += await _delete(self._shards, route, extra)
        raise MigrationError(
            f"gallery {gallery!r} kept changing through {MAX_ROUNDS} catch-up rounds; run again"
        )

    async def _ids(self, query: Doc) -> list[int]:
        return [int(d["_id"]) async for d in self._faces.find(query, {"_id": 1})]

    # -- switching ------------------------------------------------------------------------------

    async def _switch(self, gallery: str, index: str) -> None:
        doc = await self._plans.find_one({"_id": gallery})
        if doc is None or not doc.get("shadow") or doc["shadow"]["index"] != index:
            raise MigrationError(f"gallery {gallery!r}: its shadow index changed meanwhile")
        if doc.get("previous"):
            # An unconfirmed earlier switch: its old index is dropped now, as confirm would.
            await self._empty(gallery, doc["previous"])
        shadow = doc["shadow"]
        switched = await self._plans.update_one(
            {"_id": gallery, "shadow.index": index, "shadow.state": READY},
            {
                "$set": {
                    "active": {"model": shadow["model"], "index": index},
                    "previous": doc["active"],
                    "switched": dt.datetime.now(dt.UTC),
                },
                "$unset": {"shadow": ""},
            },
        )
        if switched.modified_count != 1:
            raise MigrationError(f"gallery {gallery!r}: its shadow index changed meanwhile")

    async def confirm(self) -> list[str]:
        """Drop the old index of every switched gallery (of options.galleries, if given)."""
        confirmed = []
        for doc in await self._plans.find({"previous": {"$exists": True}}).to_list():
            gallery = str(doc["_id"])
            if self._options.galleries and gallery not in self._options.galleries:
                continue
            await self._plans.update_one({"_id": gallery}, {"$unset": {"previous": ""}})
            await asyncio.sleep(self._options.settle)  # gateways stop writing it first
            await self._empty(gallery, doc["previous"])
            confirmed.append(gallery)
        return confirmed

    async def _empty(self, gallery: str, old: Doc) -> None:
        index = str(old["index"])
        if index != gallery:
            await self._plane.delete_gallery(index)
            return
        # The gallery's own index stays (its placement is the gallery's), emptied.
        route = (await self._plane.routes(index))[0]
        await _delete(self._shards, route, sorted(await _held(self._shards, route)))

    async def rollback(self) -> list[str]:
        """Switch galleries back to their previous index (which was kept current); the index
        switched away from becomes a ready shadow, so a later run switches again at once."""
        rolled = []
        for doc in await self._plans.find({"previous": {"$exists": True}}).to_list():
            gallery = str(doc["_id"])
            if self._options.galleries and gallery not in self._options.galleries:
                continue
            await self._plans.update_one(
                {"_id": gallery, "previous.index": doc["previous"]["index"]},
                {
                    "$set": {
                        "active": doc["previous"],
                        "shadow": {**doc["active"], "state": READY},
                    },
                    "$unset": {"previous": ""},
                },
            )
            rolled.append(gallery)
        return rolled

    async def abort(self) -> list[str]:
        """Give up unswitched migrations: the shadows stop being written and are deleted."""
        aborted = []
        for doc in await self._plans.find({"shadow": {"$exists": True}}).to_list():
            gallery = str(doc["_id"])
            if self._options.galleries and gallery not in self._options.galleries:
                continue
            await self._plans.update_one({"_id": gallery}, {"$unset": {"shadow": ""}})
            await asyncio.sleep(self._options.settle)
            await self._plane.delete_gallery(str(doc["shadow"]["index"]))
            aborted.append(gallery)
        return aborted

    async def status(self) -> list[str]:
        """One line per gallery with a plan: its model, and a migration's stage."""
        lines = []
        for doc in await self._plans.find({}).sort("_id", 1).to_list():
            plan = plan_of(doc)
            line = f"{plan.gallery}: {plan.active.model} (index {plan.active.index})"
            shadow = doc.get("shadow")
            if shadow:
                total = int(shadow.get("total", 0))
                built = int(shadow.get("built", 0))
                share = f" {built}/{total}" if shadow["state"] == BUILDING else ""
                line += f"; migrating to {shadow['model']}: {shadow['state']}{share}"
            if doc.get("previous"):
                line += f"; switched from {doc['previous']['model']}, not confirmed"
            lines.append(line)
        return lines


_PROJECTION = {"model": 1, "facen": 1, "vectors": 1, "normalized": 1}


async def _held(shards: Shards, route: Route) -> set[int]:
    held: set[int] = set()
    for shard in route.shards:
        held.update(int(i) for i in await shards.list_ids(shard, route.gallery))
    return held


async def _upsert(
    shards: Shards, route: Route, items: Sequence[tuple[int, bytes]]
) -> list[tuple[int, str]]:
    """Write each vector to the shards its slot is on (the owner, and mid-reshard the target)."""
    if not items:
        return []
    routed = route_ids(route, np.array([i for i, _ in items], dtype=np.uint64))
    refused: list[tuple[int, str]] = []
    for shard in sorted(set(routed.owner.tolist()) | set(routed.target.tolist())):
        mine = [
            k for k in range(len(items)) if routed.owner[k] == shard or routed.target[k] == shard
        ]
        refused += await shards.upsert(
            route.shards[shard],
            route.gallery,
            [items[k][0] for k in mine],
            [items[k][1] for k in mine],
        )
    return refused


async def _delete(shards: Shards, route: Route, ids: Sequence[int]) -> int:
    return sum([await shards.delete(shard, route.gallery, ids) for shard in route.shards])


def summary(report: MigrateReport) -> str:
    rate = report.built / report.seconds if report.seconds else 0.0
    lines = [
        f"migrated to {report.model}: {report.built} faces built ({rate:.1f} faces/s) "
        f"in {len(report.galleries)} galleries"
    ]
    for g in report.galleries:
        line = f"  {g.gallery}: {g.outcome}"
        if g.built or g.removed:
            line += f" ({g.built} built, {g.removed} deleted meanwhile taken out)"
        lines.append(line)
        lines += [f"    face {face_id}: {reason}" for face_id, reason in g.failed[:20]]
    return "\n".join(lines)
