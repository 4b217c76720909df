"""Helpers of the reindex tests: shards that count what they are asked to add, and face records
written as the gateway writes them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from facegrid.gateway.core.model import BBox, Face
from facegrid.gateway.core.ports import NewFace
from facegrid.gateway.mongo import MongoFaceStore
from facegrid.gateway.reindex.store import FaceRecords
from facegrid.gateway.reindex.topology import ControlPlane, Shards
from facegrid.indexer.core import Shard

DIM = 32


@dataclass
class Served:
    shard: Shard
    address: str
    server: grpc.aio.Server
    # Ids of every vector the shard was asked to add, in order (to count repeated work).
    added: list[int] = field(default_factory=list)

    def holds(self, gallery: str, face_id: int) -> bool:
        found, _ = self.shard.get(gallery, np.array([face_id], np.uint64))
        return len(found) == 1


def count_adds(served: Served) -> None:
    add = served.shard.add

    def counted(gallery: str, ids: Any, vectors: Any, *, upsert: bool = False) -> int:
        served.added += [int(i) for i in ids]
        return add(gallery, ids, vectors, upsert=upsert)

    served.shard.add = counted  # type: ignore[method-assign]


def vectors(count: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, DIM)).astype("<f4")


async def enroll(
    store: MongoFaceStore,
    galleries_of: list[tuple[str, ...]],
    *,
    seed: int = 7,
    activate: bool = True,
    hidden: tuple[str, ...] = (),
) -> dict[int, bytes]:
    """Face records as the gateway writes them (no vectors on shards); returns id -> vector."""
    ids = await store.next_ids(len(galleries_of))
    rows = vectors(len(ids), seed)
    when = dt.datetime.now(dt.UTC)
    new = [
        NewFace(
            Face(
                id=face_id,
                bbox=BBox(0, 0, 10, 10),
                meta=f"face {face_id}",
                galleries=galleries,
                photo="/media/x.jpg",
                photo_hash="0" * 32,
                timestamp=when,
                model="test-model",
                hidden_galleries=hidden,
            ),
            row.tobytes(),
        )
        for face_id, galleries, row in zip(ids, galleries_of, rows, strict=True)
    ]
    for start in range(0, len(new), 1000):
        await store.insert_pending(new[start : start + 1000])
    if activate:
        for start in range(0, len(ids), 1000):
            await store.activate(ids[start : start + 1000])
    return {n.face.id: n.facen for n in new}


@dataclass
class Tools:
    records: FaceRecords
    plane: ControlPlane
    shards: Shards
