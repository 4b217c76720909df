"""The FaceStore and MediaStore ports over MongoDB (pymongo's async client) and GridFS.

Faces are journaled writes (w=1, j=True): an acknowledged face survives a crash of the
database. Every query the API makes has an index (`ensure_indexes`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from bson import Binary
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument, WriteConcern
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from facegrid.gateway.coalesce import Coalescer
from facegrid.gateway.core.errors import ServiceUnavailable
from facegrid.gateway.core.indexes import model_key
from facegrid.gateway.core.model import Attributes, BBox, Face
from facegrid.gateway.core.persons import Event, HistoryQuery, Person
from facegrid.gateway.core.ports import MetaSummary, NewFace
from facegrid.gateway.timing import timed

MEDIA_PREFIX = "/media/"
ACTIVE = "active"
PENDING = "pending"

Doc = dict[str, Any]
# What face reads leave out: the vectors, which only the index needs.
_NO_VECTORS = {"facen": 0, "vectors": 0}


def _face(doc: Doc) -> Face:
    attributes = None
    if doc.get("attributes"):
        a = doc["attributes"]
        emotions = a.get("emotions")
        attributes = Attributes(
            gender=a.get("gender"),
            gender_confidence=a.get("gender_confidence", 0.0),
            age=a.get("age"),
            emotions=tuple((e, p) for e, p in emotions) if emotions is not None else None,
        )
    box = doc["bbox"]
    return Face(
        id=int(doc["_id"]),
        bbox=BBox(box["x1"], box["y1"], box["x2"], box["y2"]),
        meta=doc.get("meta", ""),
        galleries=tuple(doc.get("galleries", ())),
        photo=doc.get("photo", ""),
        photo_hash=doc.get("photo_hash", ""),
        timestamp=doc["timestamp"],
        thumbnail=doc.get("thumbnail", ""),
        normalized=doc.get("normalized", ""),
        person_id=doc.get("person_id"),
        cam_id=doc.get("cam_id"),
        attributes=attributes,
        model=doc.get("model", ""),
        hidden_galleries=tuple(doc.get("hidden_galleries", ())),
        friend=doc.get("friend"),
    )


def _doc(new: NewFace) -> Doc:
    face = new.face
    doc: Doc = {
        "_id": face.id,
        "state": PENDING,
        "meta": face.meta,
        "galleries": list(face.galleries),
        "photo": face.photo,
        "photo_hash": face.photo_hash,
        "timestamp": face.timestamp,
        "bbox": face.bbox.as_dict(),
        "thumbnail": face.thumbnail,
        "normalized": face.normalized,
        "model": face.model,
        "facen": Binary(new.facen),
        **face.extra,
    }
    if new.vectors:
        doc["vectors"] = {model_key(m): Binary(v) for m, v in new.vectors.items()}
    if face.person_id is not None:
        doc["person_id"] = face.person_id
    if face.cam_id is not None:
        doc["cam_id"] = face.cam_id
    if face.hidden_galleries:
        doc["hidden_galleries"] = list(face.hidden_galleries)
    if face.friend is not None:
        doc["friend"] = face.friend
    if face.attributes is not None:
        a = face.attributes
        doc["attributes"] = {
            "gender": a.gender,
            "gender_confidence": a.gender_confidence,
            "age": a.age,
            "emotions": [list(e) for e in a.emotions] if a.emotions is not None else None,
        }
    return doc


async def _call(operation: Any) -> Any:
    """Await a database operation; a failure is SERVICE_UNAVAILABLE, not a 500."""
    try:
        async with timed("db"):
            return await operation
    except PyMongoError as e:
        raise ServiceUnavailable(f"database unavailable: {e}") from e


async def _advance(counters: Any, name: str, count: int = 1) -> int:
    """Add count to the named counter; returns its new value (the last id handed out)."""
    for _ in range(3):
        try:
            counter = await _call(
                counters.find_one_and_update(
                    {"_id": name},
                    {"$inc": {"seq": count}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            )
        except ServiceUnavailable as e:
            if not isinstance(e.__cause__, DuplicateKeyError):
                raise
            counter = None
        if counter is not None:
            return int(counter["seq"])
        # The counter's first uses raced to insert it and this one lost (a duplicate key error
        # from MongoDB, no document from some stand-ins): the counter exists now, so again.
    raise ServiceUnavailable(f"database unavailable: the counter {name!r} was not advanced")


def _refused(error: ServiceUnavailable, count: int) -> set[int] | None:
    """The positions of the documents an unordered bulk write refused, when only some were
    (each refusal is its own); None when the write failed as a whole."""
    cause = error.__cause__
    if not isinstance(cause, BulkWriteError) or cause.details.get("writeConcernErrors"):
        return None
    failed = {int(e["index"]) for e in cause.details.get("writeErrors", [])}
    return failed if failed and max(failed) < count else None


def _journaled(client: AsyncMongoClient[Doc], db: str, name: str) -> Any:
    return client[db].get_collection(name, write_concern=WriteConcern(w=1, j=True))


def _listed(gallery: str | None) -> Doc:
    """The query for the faces a listing shows: active ones, of one gallery or all."""
    return {"state": ACTIVE} if gallery is None else {"state": ACTIVE, "galleries": gallery}


async def _docs(cursor: Any) -> list[Doc]:
    """Every document of a cursor."""
    docs: list[Doc] = await _call(cursor.to_list())
    return docs


class MongoFaceStore:
    def __init__(self, client: AsyncMongoClient[Doc], db: str) -> None:
        self._faces = _journaled(client, db, "faces")
        self._counters = _journaled(client, db, "counters")
        # Concurrent adds share their three writes (group commit): each journaled write costs
        # the database a flush, whatever its size.
        self._take_ids = Coalescer(self._take_id_blocks)
        self._insert = Coalescer(self._insert_batches)
        self._activate = Coalescer(self._activate_batches)

    async def ensure_indexes(self) -> None:
        await self._faces.create_index([("state", ASCENDING), ("_id", DESCENDING)])
        await self._faces.create_index(
            [("galleries", ASCENDING), ("state", ASCENDING), ("_id", DESCENDING)]
        )
        await self._faces.create_index([("meta", ASCENDING), ("_id", ASCENDING)])
        await self._faces.create_index([("person_id", ASCENDING), ("_id", ASCENDING)])
        await self._faces.create_index([("photo_hash", ASCENDING)])

    async def next_ids(self, count: int) -> list[int]:
        return await self._take_ids(count)

    async def _take_id_blocks(self, counts: list[int]) -> list[list[int]]:
        """One counter advance for several callers: consecutive blocks, in the callers' order."""
        total = sum(counts)
        first = await _advance(self._counters, "faces", total) - total + 1
        blocks = []
        for count in counts:
            blocks.append(list(range(first, first + count)))
            first += count
        return blocks

    async def insert_pending(self, faces: Sequence[NewFace]) -> None:
        await self._insert([_doc(f) for f in faces])

    async def _insert_batches(self, batches: list[list[Doc]]) -> list[BaseException | None]:
        """Several callers' records in one insert. Unordered, so that a record refused (its
        caller fails) does not keep the others out."""
        docs = [doc for batch in batches for doc in batch]
        try:
            await _call(self._faces.insert_many(docs, ordered=False))
        except ServiceUnavailable as e:
            failed = _refused(e, len(docs))
            if failed is None:
                raise
            outcomes: list[BaseException | None] = []
            start = 0
            for batch in batches:
                refused = any(start <= n < start + len(batch) for n in failed)
                outcomes.append(e if refused else None)
                start += len(batch)
            return outcomes
        return [None] * len(batches)

    async def activate(self, ids: Sequence[int]) -> None:
        await self._activate(list(ids))

    async def _activate_batches(self, batches: list[list[int]]) -> list[None]:
        ids = [face_id for batch in batches for face_id in batch]
        await _call(self._faces.update_many({"_id": {"$in": ids}}, {"$set": {"state": ACTIVE}}))
        return [None] * len(batches)

    async def remove(self, ids: Sequence[int]) -> None:
        await _call(self._faces.delete_many({"_id": {"$in": list(ids)}}))

    async def get(self, face_id: int) -> Face | None:
        doc = await _call(self._faces.find_one({"_id": face_id, "state": ACTIVE}))
        return _face(doc) if doc else None

    async def vector(self, face_id: int, model: str) -> bytes | None:
        key = f"vectors.{model_key(model)}"
        doc = await _call(self._faces.find_one({"_id": face_id}, {"facen": 1, "model": 1, key: 1}))
        if doc is None:
            return None
        if doc.get("model") == model and "facen" in doc:
            return bytes(doc["facen"])
        other = doc.get("vectors", {}).get(model_key(model))
        return bytes(other) if other is not None else None

    async def get_many(self, ids: Sequence[int]) -> dict[int, Face]:
        if not ids:
            return {}
        cursor = self._faces.find({"_id": {"$in": list(ids)}, "state": ACTIVE}, _NO_VECTORS)
        return {int(d["_id"]): _face(d) for d in await _docs(cursor)}

    async def update(
        self,
        face_id: int,
        *,
        meta: str | None = None,
        person_id: int | None = None,
        galleries: Sequence[str] | None = None,
        hidden_galleries: Sequence[str] | None = None,
    ) -> Face | None:
        changes: Doc = {}
        if meta is not None:
            changes["meta"] = meta
        if person_id is not None:
            changes["person_id"] = person_id
        if galleries is not None:
            changes["galleries"] = list(galleries)
        if hidden_galleries is not None:
            changes["hidden_galleries"] = list(hidden_galleries)
        if not changes:
            return await self.get(face_id)
        doc = await _call(
            self._faces.find_one_and_update(
                {"_id": face_id, "state": ACTIVE},
                {"$set": changes},
                projection=_NO_VECTORS,
                return_document=ReturnDocument.AFTER,
            )
        )
        return _face(doc) if doc else None

    async def page(self, *, gallery: str | None, max_id: int | None, limit: int) -> list[Face]:
        """A page of faces, walking the id range down in growing windows from max_id.

        Every query is bounded on both sides of `_id`, so the database sorts only what lies in
        the window, not the whole collection (MongoDB would do either well; the one-machine
        stand-in needs the bounds: 2 s against 10 ms per page at 100k faces).
        """
        newest = await self._newest_id()
        high = min(max_id if max_id is not None else newest + 1, newest + 1)
        found: list[Doc] = []
        window = max(2 * limit, 256)
        while len(found) < limit and high > 1:
            low = max(high - window, 1)
            bounded = {**_listed(gallery), "_id": {"$gte": low, "$lt": high}}
            cursor = self._faces.find(bounded, _NO_VECTORS).sort("_id", DESCENDING)
            found += await _docs(cursor.limit(limit - len(found)))
            high, window = low, window * 2
        return [_face(d) for d in found]

    async def count_active(self) -> int:
        """How many faces are stored (the licence's faces count)."""
        count: int = await _call(self._faces.count_documents({"state": ACTIVE}))
        return count

    async def ids_above(self, *, gallery: str | None, min_id: int, limit: int) -> list[int]:
        """The ids of the limit faces just above min_id, ascending (only ids are read)."""
        newest = await self._newest_id()
        low = min_id + 1
        found: list[Doc] = []
        window = max(2 * limit, 256)
        while len(found) < limit and low <= newest:
            high = low + window
            bounded = {**_listed(gallery), "_id": {"$gte": low, "$lt": high}}
            cursor = self._faces.find(bounded, {"_id": 1}).sort("_id", ASCENDING)
            found += await _docs(cursor.limit(limit - len(found)))
            low, window = high, window * 2
        return [int(d["_id"]) for d in found]

    async def _newest_id(self) -> int:
        counter = await _call(self._counters.find_one({"_id": "faces"}))
        return int(counter["seq"]) if counter else 0

    async def by_meta(self, meta: str, gallery: str | None) -> list[Face]:
        query: Doc = {"state": ACTIVE, "meta": meta}
        if gallery is not None:
            query["galleries"] = gallery
        cursor = self._faces.find(query, _NO_VECTORS).sort("_id", ASCENDING)
        return [_face(d) for d in await _docs(cursor)]

    async def metas(self, gallery: str | None, max_id: int, limit: int) -> list[MetaSummary]:
        pipeline = _meta_pipeline(gallery, {"$lt": max_id}, DESCENDING, limit)
        groups = await _docs(await _call(self._faces.aggregate(pipeline)))
        faces = await self.get_many([g["first"] for g in groups])
        return [
            MetaSummary(g["_id"], int(g["count"]), faces[g["first"]])
            for g in groups
            if g["first"] in faces
        ]

    async def meta_ids_above(self, *, gallery: str | None, min_id: int, limit: int) -> list[int]:
        pipeline = _meta_pipeline(gallery, {"$gt": min_id}, ASCENDING, limit)
        return [int(g["first"]) for g in await _docs(await _call(self._faces.aggregate(pipeline)))]

    async def by_person(self, person_id: int) -> list[Face]:
        query = {"state": ACTIVE, "person_id": person_id}
        cursor = self._faces.find(query, _NO_VECTORS).sort("_id", ASCENDING)
        return [_face(d) for d in await _docs(cursor)]

    async def set_friend(self, face_id: int, friend: bool) -> None:
        await _call(self._faces.update_one({"_id": face_id}, {"$set": {"friend": friend}}))

    async def ids_in_gallery(self, gallery: str) -> list[int]:
        cursor = self._faces.find({"galleries": gallery}, {"_id": 1})
        return [int(d["_id"]) for d in await _docs(cursor)]

    async def drop_gallery(self, gallery: str) -> None:
        await _call(
            self._faces.update_many({"galleries": gallery}, {"$pull": {"galleries": gallery}})
        )


def _meta_pipeline(gallery: str | None, first: Doc, order: int, limit: int) -> list[Doc]:
    """Each meta's face count and first face id, for the limit metas whose first id matches
    `first`, in that id's `order`."""
    match: Doc = {"state": ACTIVE, "meta": {"$ne": ""}}
    if gallery is not None:
        match["galleries"] = gallery
    return [
        {"$match": match},
        {"$group": {"_id": "$meta", "count": {"$sum": 1}, "first": {"$min": "$_id"}}},
        {"$match": {"first": first}},
        {"$sort": {"first": order}},
        {"$limit": limit},
    ]


def _event(doc: Doc) -> Event:
    box = doc["bbox"]
    return Event(
        id=int(doc["_id"]),
        face_id=int(doc["face_id"]),
        cam_id=doc["cam_id"],
        timestamp=doc["timestamp"],
        bbox=BBox(box["x1"], box["y1"], box["x2"], box["y2"]),
        meta=doc.get("meta", ""),
        photo=doc.get("photo", ""),
        photo_hash=doc.get("photo_hash", ""),
        screenshot=doc.get("screenshot", ""),
        person_id=doc.get("person_id"),
        friend=bool(doc.get("friend", False)),
    )


def _day(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).date().isoformat()


class MongoHistoryStore:
    """Persons and camera history events (journaled, like faces)."""

    def __init__(self, client: AsyncMongoClient[Doc], db: str) -> None:
        self._persons = _journaled(client, db, "persons")
        self._events = _journaled(client, db, "history")
        self._counters = _journaled(client, db, "counters")

    async def ensure_indexes(self) -> None:
        await self._events.create_index([("person_id", ASCENDING), ("_id", DESCENDING)])
        await self._events.create_index(
            [("person_id", ASCENDING), ("cam_id", ASCENDING), ("day", ASCENDING)]
        )
        await self._events.create_index([("cam_id", ASCENDING), ("_id", DESCENDING)])
        await self._events.create_index([("timestamp", ASCENDING)])

    async def next_event_id(self) -> int:
        return await _advance(self._counters, "history")

    async def next_person_id(self) -> int:
        return await _advance(self._counters, "persons")

    async def add_person(self, person: Person) -> None:
        await _call(
            self._persons.insert_one(
                {"_id": person.id, "meta": person.meta, "created_at": person.created_at}
            )
        )

    async def claim_person(self, person: Person) -> None:
        await _call(
            self._persons.update_one(
                {"_id": person.id},
                {"$setOnInsert": {"meta": person.meta, "created_at": person.created_at}},
                upsert=True,
            )
        )
        await _call(
            self._counters.update_one({"_id": "persons"}, {"$max": {"seq": person.id}}, upsert=True)
        )

    async def move_events(self, face_id: int, person_id: int) -> None:
        await _call(
            self._events.update_many({"face_id": face_id}, {"$set": {"person_id": person_id}})
        )

    async def person(self, person_id: int) -> Person | None:
        doc = await _call(self._persons.find_one({"_id": person_id}))
        return Person(int(doc["_id"]), doc.get("meta", ""), doc["created_at"]) if doc else None

    async def persons(self, max_id: int | None, limit: int) -> list[Person]:
        query: Doc = {} if max_id is None else {"_id": {"$lt": max_id}}
        cursor = self._persons.find(query).sort("_id", DESCENDING).limit(limit)
        return [
            Person(int(d["_id"]), d.get("meta", ""), d["created_at"]) for d in await _docs(cursor)
        ]

    async def add_event(self, event: Event) -> None:
        doc: Doc = {
            "_id": event.id,
            "face_id": event.face_id,
            "cam_id": event.cam_id,
            "timestamp": event.timestamp,
            "day": _day(event.timestamp),
            "bbox": event.bbox.as_dict(),
            "meta": event.meta,
            "photo": event.photo,
            "photo_hash": event.photo_hash,
            "screenshot": event.screenshot,
            "person_id": event.person_id,
            "friend": event.friend,
        }
        await _call(self._events.insert_one(doc))

    async def seen_on(self, person_id: int, cam_id: str, day: dt.datetime) -> bool:
        query = {"person_id": person_id, "cam_id": cam_id, "day": _day(day)}
        return await _call(self._events.find_one(query, {"_id": 1})) is not None

    async def days_seen(
        self, person_id: int, cam_id: str, since: dt.datetime, until: dt.datetime
    ) -> int:
        window = {"$gte": since, "$lte": until}
        query = {"person_id": person_id, "cam_id": cam_id, "timestamp": window}
        days = {d["day"] for d in await _docs(self._events.find(query, {"day": 1}))}
        return len(days)

    async def events(self, query: HistoryQuery) -> list[Event]:
        match: Doc = {}
        if query.person_id is not None:
            match["person_id"] = query.person_id
        if query.cam_ids:
            match["cam_id"] = {"$in": list(query.cam_ids)}
        if query.start or query.end:
            window: Doc = {}
            if query.start:
                window["$gte"] = query.start
            if query.end:
                window["$lte"] = query.end
            match["timestamp"] = window
        if query.friend is not None:
            match["friend"] = query.friend
        if query.max_id is not None:
            match["_id"] = {"$lt": query.max_id}
        cursor = self._events.find(match).sort("_id", DESCENDING)
        if query.limit:
            cursor = cursor.limit(query.limit)
        return [_event(d) for d in await _docs(cursor)]


class GridFsMedia:
    """Photos, thumbnails and normalized faces in GridFS, served under /media/<name>."""

    def __init__(self, client: AsyncMongoClient[Doc], db: str) -> None:
        self._bucket = AsyncGridFSBucket(client[db], bucket_name="media")
        self._files = client[db]["media.files"]

    async def put(self, name: str, data: bytes, content_type: str) -> str:
        try:
            async with timed("media"):
                if await self._files.find_one({"filename": name}, {"_id": 1}) is None:
                    await self._bucket.upload_from_stream(
                        name, data, metadata={"content_type": content_type}
                    )
        except PyMongoError as e:
            raise ServiceUnavailable(f"media store unavailable: {e}") from e
        return MEDIA_PREFIX + name

    async def get(self, name: str) -> tuple[bytes, str] | None:
        try:
            async with timed("media"):
                stream = await self._bucket.open_download_stream_by_name(name)
                data = await stream.read()
        except NoFile:
            return None
        except PyMongoError as e:
            raise ServiceUnavailable(f"media store unavailable: {e}") from e
        metadata = stream.metadata or {}
        return data, str(metadata.get("content_type", "application/octet-stream"))

    async def delete(self, name: str) -> None:
        async for doc in self._files.find({"filename": name}, {"_id": 1}):
            await self._bucket.delete(doc["_id"])
