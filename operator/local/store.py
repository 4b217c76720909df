"""Galleries and cameras of the local control plane, kept in MongoDB.

In Kubernetes the same records are FaceGallery and Camera resources; here they are documents in
the `galleries` and `cameras` collections.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from facegrid.operator.core.cameras import CameraChange, Region
from facegrid.operator.core.placement import (
    AlreadyExists,
    NotFound,
    Placement,
    ShardRef,
    Unavailable,
    new_camera_id,
)
from facegrid.operator.core.records import CameraRecord as CameraRecord
from facegrid.operator.core.records import GalleryRecord as GalleryRecord


def _placement_doc(p: Placement) -> dict[str, Any]:
    return {
        "version": p.version,
        "shards": [
            {"name": s.name, "address": s.address, "replicas": list(s.replicas)} for s in p.shards
        ],
        "slot_shards": list(p.slot_shards),
    }


def _gallery(doc: dict[str, Any]) -> GalleryRecord:
    p = doc["placement"]
    placement = Placement(
        doc["_id"],
        p["version"],
        tuple(ShardRef(s["name"], s["address"], tuple(s["replicas"])) for s in p["shards"]),
        tuple(p["slot_shards"]),
    )
    return GalleryRecord(doc["_id"], doc["created_at"], placement)


def _camera(doc: dict[str, Any]) -> CameraRecord:
    return CameraRecord(
        doc["_id"],
        doc["url"],
        doc["detector"],
        doc["meta"],
        doc["active"],
        doc["created_at"],
        Region(*doc["rot"]) if doc.get("rot") else None,
        Region(*doc["roi"]) if doc.get("roi") else None,
    )


class Store:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], db: str) -> None:
        self._db = client[db]

    async def _run(self, coro: Any) -> Any:
        try:
            return await coro
        except DuplicateKeyError:
            raise
        except PyMongoError as e:
            raise Unavailable(f"MongoDB: {e}") from e

    async def ping(self) -> None:
        await self._run(self._db.command("ping"))

    async def insert_gallery(self, name: str, placement: Placement) -> GalleryRecord:
        doc = {"_id": name, "created_at": _now(), "placement": _placement_doc(placement)}
        try:
            await self._run(self._db.galleries.insert_one(doc))
        except DuplicateKeyError as e:
            raise AlreadyExists(f"gallery {name!r} already exists") from e
        return _gallery(doc)

    async def get_gallery(self, name: str) -> GalleryRecord:
        doc = await self._run(self._db.galleries.find_one({"_id": name}))
        if doc is None:
            raise NotFound(f"gallery {name!r} does not exist")
        return _gallery(doc)

    async def list_galleries(self) -> list[GalleryRecord]:
        docs = await self._run(self._db.galleries.find().sort("_id", 1).to_list())
        return [_gallery(d) for d in docs]

    async def set_placement(self, name: str, placement: Placement) -> None:
        await self._run(
            self._db.galleries.update_one(
                {"_id": name}, {"$set": {"placement": _placement_doc(placement)}}
            )
        )

    async def delete_gallery(self, name: str) -> None:
        result = await self._run(self._db.galleries.delete_one({"_id": name}))
        if result.deleted_count == 0:
            raise NotFound(f"gallery {name!r} does not exist")

    async def insert_camera(
        self,
        url: str,
        detector: str,
        meta: str,
        active: bool,
        rot: Region | None = None,
        roi: Region | None = None,
    ) -> CameraRecord:
        doc = {
            "_id": new_camera_id(),
            "url": url,
            "detector": detector,
            "meta": meta,
            "active": active,
            "created_at": _now(),
            "rot": rot.as_list() if rot else None,
            "roi": roi.as_list() if roi else None,
        }
        await self._run(self._db.cameras.insert_one(doc))
        return _camera(doc)

    async def update_camera(self, camera_id: str, change: CameraChange) -> CameraRecord:
        fields: dict[str, Any] = {
            "rot": change.rot.as_list() if change.rot else None,
            "roi": change.roi.as_list() if change.roi else None,
        }
        for name in ("url", "detector", "meta", "active"):
            value = getattr(change, name)
            if value is not None:
                fields[name] = value
        doc = await self._run(
            self._db.cameras.find_one_and_update(
                {"_id": camera_id}, {"$set": fields}, return_document=ReturnDocument.AFTER
            )
        )
        if doc is None:
            raise NotFound(f"camera {camera_id!r} does not exist")
        return _camera(doc)

    async def get_camera(self, camera_id: str) -> CameraRecord:
        doc = await self._run(self._db.cameras.find_one({"_id": camera_id}))
        if doc is None:
            raise NotFound(f"camera {camera_id!r} does not exist")
        return _camera(doc)

    async def list_cameras(self, detector: str) -> list[CameraRecord]:
        query = {"detector": detector} if detector else {}
        docs = await self._run(self._db.cameras.find(query).sort("created_at", 1).to_list())
        return [_camera(d) for d in docs]

    async def delete_camera(self, camera_id: str) -> None:
        result = await self._run(self._db.cameras.delete_one({"_id": camera_id}))
        if result.deleted_count == 0:
            raise NotFound(f"camera {camera_id!r} does not exist")


def _now() -> dt.datetime:
    # MongoDB keeps milliseconds; truncate now so a record reads back equal to what was written.
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
