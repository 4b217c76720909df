"""What reindexing reads from and writes to MongoDB: the gateway's face records, and its own
checkpoints.

Reindexing works on indexes, the control plane's galleries. What an index should hold comes
from the galleries' index plans (`facegrid.gateway.index_plans`): the active faces of the
gallery it serves, with their vectors of its model. An index no plan names holds its own
gallery's faces with the vectors they were stored with; a migration's index no plan names any
more, or a gallery's own index after its migration was confirmed, should hold nothing.

Face ids come from a counter, so they are dense: every read is a window on `_id`, walked upward
in growing steps, which the one-machine stand-in answers without sorting the whole collection
(the same reason as `MongoFaceStore.page`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymongo import AsyncMongoClient, WriteConcern
from pymongo.errors import PyMongoError

from facegrid.gateway.core.indexes import SHADOW_PREFIX, model_key
from facegrid.gateway.core.persons import is_internal
from facegrid.gateway.index_plans import COLLECTION, plan_of
from facegrid.gateway.mongo import ACTIVE, PENDING

Doc = dict[str, Any]

CHECKPOINTS = "reindex_checkpoints"


class StoreError(Exception):
    """MongoDB failed or could not be reached; a rerun resumes from the last checkpoint."""


@dataclass(frozen=True)
class FaceVectors:
    """A batch of faces in ascending id order with their stored vectors (b"" when absent)."""

    ids: np.ndarray  # uint64
    vectors: list[bytes]


@dataclass(frozen=True)
class Checkpoint:
    gallery: str
    last_id: int
    placement_version: int
    done: bool


@dataclass(frozen=True)
class PendingFace:
    id: int
    # The indexes its vectors may have reached: every index written for its galleries.
    galleries: tuple[str, ...]


@dataclass(frozen=True)
class IndexSource:
    """What an index should hold: the active faces of `gallery` (None: nothing at all), with
    their vectors of `model` ("": the vector each was stored with)."""

    index: str
    gallery: str | None
    model: str = ""

    def vector(self, doc: Doc) -> bytes:
        """The face's vector for this index (b"" when it has none)."""
        if not self.model or doc.get("model") == self.model:
            return bytes(doc.get("facen") or b"")
        return bytes(doc.get("vectors", {}).get(model_key(self.model)) or b"")

    @property
    def projection(self) -> Doc:
        if not self.model:
            return {"facen": 1}
        return {"facen": 1, "model": 1, f"vectors.{model_key(self.model)}": 1}


async def index_sources(plans: Any) -> dict[str, IndexSource]:
    """The sources the galleries' index plans name, by index."""
    sources: dict[str, IndexSource] = {}
    async for doc in plans.find({}):
        plan = plan_of(doc)
        for written in plan.written:
            sources[written.index] = IndexSource(written.index, plan.gallery, written.model)
        sources.setdefault(plan.gallery, IndexSource(plan.gallery, None))
    return sources


async def newest_face_id(counters: Any) -> int:
    """The last face id handed out (the gateway's counter)."""
    counter = await counters.find_one({"_id": "faces"})
    return int(counter["seq"]) if counter else 0


async def id_window(
    faces: Any,
    query: Doc,
    after: int,
    limit: int,
    projection: Doc,
    *,
    newest: int,
    ids: Doc | None = None,
) -> list[Doc]:
    """The first `limit` faces matching query with ids above `after` (and matching `ids`, more
    conditions on _id), in id order, read through bounded id windows.

    `{_id: {$gt: after}}` sorted and limited makes SecantusDB read every face above `after`
    first: 1.9 s a batch at 100k faces. Ids are dense, so the first window is usually enough;
    sparse galleries (or every other id) widen it.
    """
    low, window = after + 1, limit
    found: list[Doc] = []
    while len(found) < limit and low <= newest:
        high = low + window
        cursor = (
            faces.find({**query, "_id": {**(ids or {}), "$gte": low, "$lt": high}}, projection)
            .sort("_id", 1)
            .limit(limit - len(found))
        )
        found += await cursor.to_list()
        low, window = high, window * 2
    return found


def gallery_field(gallery: str) -> str:
    """The record field naming a gallery: the gateway's own (person) galleries are kept apart
    from the galleries clients see."""
    return "hidden_galleries" if is_internal(gallery) else "galleries"


class FaceRecords:
    def __init__(self, client: AsyncMongoClient[Doc], db: str) -> None:
        self._faces = client[db]["faces"]
        self._counters = client[db]["counters"]
        self._checkpoints = client[db].get_collection(
            CHECKPOINTS, write_concern=WriteConcern(w=1, j=True)
        )
        self._plans = client[db][COLLECTION]
        self._sources: dict[str, IndexSource] | None = None

    async def _run(self, operation: Any) -> Any:
        try:
            return await operation
        except PyMongoError as e:
            raise StoreError(f"MongoDB: {e}") from e

    # -- what indexes hold -----------------------------------------------------------------------

    async def reload_sources(self) -> None:
        self._sources = await self._run(index_sources(self._plans))

    async def source(self, index: str) -> IndexSource:
        if self._sources is None:
            await self.reload_sources()
        assert self._sources is not None
        known = self._sources.get(index)
        if known is not None:
            return known
        # Unplanned: a gallery's own index, or a migration's that no plan names any more.
        return IndexSource(index, None if index.startswith(SHADOW_PREFIX) else index)

    async def _active(self, index: str) -> tuple[Doc, IndexSource]:
        """The query for the faces the index should hold, and its source."""
        source = await self.source(index)
        if source.gallery is None:
            return {"state": "none"}, source  # matches nothing (reads set their own _id)
        return {gallery_field(source.gallery): source.gallery, "state": ACTIVE}, source

    async def indexes_of(self, galleries: Sequence[str]) -> tuple[str, ...]:
        """Every index the galleries' faces are written to."""
        if self._sources is None:
            await self.reload_sources()
        assert self._sources is not None
        found: list[str] = []
        for gallery in galleries:
            planned = [i for i, s in self._sources.items() if s.gallery == gallery]
            found += planned if gallery in self._sources else [gallery]
        return tuple(dict.fromkeys(found))

    # -- faces ----------------------------------------------------------------------------------

    async def newest_id(self) -> int:
        newest: int = await self._run(newest_face_id(self._counters))
        return newest

    async def count(self, gallery: str, *, up_to: int | None = None) -> int:
        """The faces the index (named `gallery`, as all here) should hold."""
        query, _ = await self._active(gallery)
        if up_to is not None:
            query["_id"] = {"$lte": up_to}
        count: int = await self._run(self._faces.count_documents(query))
        return count

    async def _window_after(self, query: Doc, after: int, limit: int, projection: Doc) -> list[Doc]:
        newest = await self.newest_id()
        docs: list[Doc] = await self._run(
            id_window(self._faces, query, after, limit, projection, newest=newest)
        )
        return docs

    async def vectors_after(self, gallery: str, after: int, limit: int) -> FaceVectors:
        """The next limit active faces of the gallery with ids above `after`."""
        query, source = await self._active(gallery)
        docs = await self._window_after(query, after, limit, source.projection)
        return FaceVectors(
            np.array([int(d["_id"]) for d in docs], np.uint64), [source.vector(d) for d in docs]
        )

    async def ids(self, gallery: str, *, page: int = 20_000) -> np.ndarray:
        """Every active face id of the gallery, ascending."""
        query, _ = await self._active(gallery)
        chunks, after = [], 0
        while True:
            docs = await self._window_after(query, after, page, {"_id": 1})
            if not docs:
                break
            chunks.append(np.array([int(d["_id"]) for d in docs], np.uint64))
            after = int(docs[-1]["_id"])
        return np.concatenate(chunks) if chunks else np.empty(0, np.uint64)

    async def vectors_of(
        self, ids: Sequence[int], *, active_only: bool = False, index: str = ""
    ) -> dict[int, bytes]:
        """The stored vectors of these faces (only of active ones if active_only), of the
        index's model (the vectors they were stored with if no index is named)."""
        source = await self.source(index) if index else IndexSource("", None)
        out: dict[int, bytes] = {}
        for start in range(0, len(ids), 1000):
            chunk = [int(i) for i in ids[start : start + 1000]]
            query: Doc = {"_id": {"$in": chunk}}
            if active_only:
                query["state"] = ACTIVE
            cursor = self._faces.find(query, source.projection)
            for doc in await self._run(cursor.to_list()):
                out[int(doc["_id"])] = source.vector(doc)
        return out

    async def pending(self, gallery: str | None = None) -> list[PendingFace]:
        """Records an enrollment has written but not yet made visible."""
        query: Doc = {"state": PENDING}
        if gallery is not None:
            source = (await self.source(gallery)).gallery
            query[gallery_field(source or gallery)] = source or gallery
        cursor = self._faces.find(query, {"galleries": 1, "hidden_galleries": 1})
        return [
            PendingFace(
                int(d["_id"]),
                await self.indexes_of([*d.get("galleries", ()), *d.get("hidden_galleries", ())]),
            )
            for d in await self._run(cursor.to_list())
        ]

    async def remove_pending(self, face_id: int) -> bool:
        """Remove the record if it is still pending; False when it was activated meanwhile."""
        result = await self._run(self._faces.delete_one({"_id": face_id, "state": PENDING}))
        return bool(result.deleted_count)

    # -- checkpoints ----------------------------------------------------------------------------

    async def checkpoint(self, gallery: str) -> Checkpoint | None:
        doc = await self._run(self._checkpoints.find_one({"_id": gallery}))
        if doc is None:
            return None
        return Checkpoint(
            gallery, int(doc["last_id"]), int(doc["placement_version"]), bool(doc["done"])
        )

    async def save_checkpoint(self, point: Checkpoint) -> None:
        await self._run(
            self._checkpoints.replace_one(
                {"_id": point.gallery},
                {
                    "last_id": point.last_id,
                    "placement_version": point.placement_version,
                    "done": point.done,
                    "updated": dt.datetime.now(dt.UTC),
                },
                upsert=True,
            )
        )

    async def clear_checkpoints(self, galleries: Sequence[str] | None = None) -> None:
        query: Doc = {} if galleries is None else {"_id": {"$in": list(galleries)}}
        await self._run(self._checkpoints.delete_many(query))
