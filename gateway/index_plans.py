"""Galleries' index plans in MongoDB (collection `gallery_indexes`), shared by every gateway and
by `facegrid migrate`.

One document per gallery: `active` ({model, index}), and while a migration runs `shadow`
({model, index, state, ...}), after its switch `previous` ({model, index}) until confirmed.
Gateways read the whole collection again once it is `refresh` seconds old, so a change reaches
every gateway within that time; the migration tool waits longer than that after each change.
"""

from __future__ import annotations

import time
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from facegrid.gateway.core.errors import ServiceUnavailable
from facegrid.gateway.core.indexes import GalleryIndexes, ModelIndex

Doc = dict[str, Any]
COLLECTION = "gallery_indexes"
# Shadow states in which the shadow index is written.
WRITTEN_STATES = ("building", "ready")


def plan_of(doc: Doc) -> GalleryIndexes:
    also = []
    shadow = doc.get("shadow")
    if shadow and shadow.get("state") in WRITTEN_STATES:
        also.append(ModelIndex(shadow["model"], shadow["index"]))
    previous = doc.get("previous")
    if previous:
        also.append(ModelIndex(previous["model"], previous["index"]))
    active = doc["active"]
    return GalleryIndexes(
        str(doc["_id"]), ModelIndex(active["model"], active["index"]), tuple(also)
    )


class MongoIndexPlans:
    def __init__(self, client: AsyncMongoClient[Doc], db: str, *, refresh: float = 1.0) -> None:
        self._plans = client[db][COLLECTION]
        self._refresh = refresh
        self._cache: dict[str, GalleryIndexes] = {}
        self._read_at = float("-inf")

    async def _current(self) -> dict[str, GalleryIndexes]:
        if time.monotonic() - self._read_at >= self._refresh:
            try:
                docs = await self._plans.find({}).to_list()
            except PyMongoError as e:
                raise ServiceUnavailable(f"MongoDB: {e}") from e
            self._cache = {str(d["_id"]): plan_of(d) for d in docs}
            self._read_at = time.monotonic()
        return self._cache

    async def plan(self, gallery: str, default_model: str) -> GalleryIndexes:
        known = (await self._current()).get(gallery)
        if known is not None:
            return known
        return GalleryIndexes(gallery, ModelIndex(default_model, gallery))

    async def record(self, plan: GalleryIndexes) -> None:
        if plan.gallery in self._cache:
            return
        active = {"model": plan.active.model, "index": plan.active.index}
        try:
            try:
                doc = await self._plans.find_one_and_update(
                    {"_id": plan.gallery},
                    {"$setOnInsert": {"active": active}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                doc = None
            if doc is None:
                # Concurrent first adds to a gallery race to insert its plan: the loser gets a
                # duplicate key error (MongoDB) or no document (some stand-ins); the plan the
                # winner wrote is the one to use.
                doc = await self._plans.find_one({"_id": plan.gallery})
        except PyMongoError as e:
            raise ServiceUnavailable(f"MongoDB: {e}") from e
        if doc is None:
            raise ServiceUnavailable(f"MongoDB did not keep the index plan of {plan.gallery!r}")
        self._cache[plan.gallery] = plan_of(doc)

    async def forget(self, gallery: str) -> list[str]:
        try:
            doc = await self._plans.find_one_and_delete({"_id": gallery})
        except PyMongoError as e:
            raise ServiceUnavailable(f"MongoDB: {e}") from e
        self._cache.pop(gallery, None)
        if doc is None:
            return []
        indexes = [doc["active"]["index"]]
        indexes += [doc[k]["index"] for k in ("shadow", "previous") if doc.get(k)]
        return [i for i in dict.fromkeys(indexes) if i != gallery]
