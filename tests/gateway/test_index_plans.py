"""Index plans in MongoDB (the real wire-protocol server of the tests)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from pymongo import AsyncMongoClient

from facegrid.gateway.core.indexes import GalleryIndexes, ModelIndex
from facegrid.gateway.index_plans import COLLECTION, MongoIndexPlans


async def test_concurrent_first_adds_to_a_gallery_agree_on_one_plan(
    mongo_server: str, mongo_db: str
) -> None:
    # Many gateways (or requests) adding the first faces of a gallery at once each record the
    # plan they would start it with; one insert wins and every one of them must use that plan.
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
    try:
        gallery = f"race-{uuid.uuid4().hex}"
        gateways = [MongoIndexPlans(client, mongo_db) for _ in range(16)]
        proposed = [GalleryIndexes(gallery, ModelIndex(f"model-{n}", gallery)) for n in range(16)]
        await asyncio.gather(*(g.record(p) for g, p in zip(gateways, proposed, strict=True)))
        docs = await client[mongo_db][COLLECTION].find({"_id": gallery}).to_list()
        assert len(docs) == 1
        kept = docs[0]["active"]["model"]
        for g in gateways:
            assert (await g.plan(gallery, "unused")).active.model == kept
    finally:
        await client.close()
