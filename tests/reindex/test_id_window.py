"""Reading faces in id order through bounded id windows (the real wire-protocol server)."""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import AsyncMongoClient

from facegrid.gateway.reindex.store import id_window


async def test_windows_give_what_a_sorted_open_query_gives(
    mongo_server: str, mongo_db: str
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server)
    try:
        faces = client[mongo_db][f"faces-{uuid.uuid4().hex[:8]}"]
        # Dense ids, then a long gap, then sparse ones; every third face in another gallery.
        ids = [*range(1, 200), *range(5000, 5400, 7)]
        await faces.insert_many([{"_id": i, "g": "b" if i % 3 == 0 else "a"} for i in ids])
        newest = max(ids)
        for query, extra in (
            ({"g": "a"}, {}),
            ({}, {"$mod": [2, 1]}),
            ({"g": "a"}, {"$lte": 5100}),
        ):
            expected = [
                d["_id"]
                async for d in faces.find({**query, "_id": {**extra, "$gt": 0}}).sort("_id", 1)
            ]
            got: list[int] = []
            after = 0
            while True:
                docs = await id_window(
                    faces, query, after, 16, {"_id": 1}, newest=newest, ids=extra
                )
                if not docs:
                    break
                assert len(docs) <= 16
                got += [d["_id"] for d in docs]
                after = docs[-1]["_id"]
            assert got == expected, (query, extra)
    finally:
        await client.close()
