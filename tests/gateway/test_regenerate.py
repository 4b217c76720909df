"""`facegrid regenerate`: faces made by an old model get the extractor's model's vectors again.

A real gateway in process enrolls real photos (real extractor, MongoDB stand-in, index shard,
control plane); the faces are then made to look like an older model's (another model name,
other vectors in MongoDB and on the shard), and regenerate must bring back exactly what the
current model makes, on the shard and in MongoDB, and skip them on a second run.
"""

from __future__ import annotations

import grpc
import httpx
import numpy as np
from bson.binary import Binary
from pymongo import AsyncMongoClient

from facegrid.gateway.core.model import BBox
from facegrid.gateway.extractor_client import ExtractorClient
from facegrid.gateway.reindex.regenerate import RegenerateOptions, Regenerator, iou
from facegrid.gateway.reindex.topology import ControlPlane, Shards
from facegrid.gateway.shards import ChannelPool
from facegrid.v1 import index_pb2, index_pb2_grpc
from tests.conftest import FACES

EXAMPLES = FACES / "face_recognition" / "examples"
PHOTOS = ["obama.jpg", "biden.jpg", "obama2.jpg"]


async def test_old_model_faces_are_regenerated_and_then_skipped(
    api: httpx.AsyncClient,
    mongo_server: str,
    mongo_db: str,
    controlplane_address: str,
    extractor_address: str,
    indexer_address: str,
) -> None:
    ids = []
    for name in PHOTOS:
        answer = await api.post("/v1/face", files={"photo": (EXAMPLES / name).read_bytes()})
        assert answer.status_code == 200, answer.text
        ids.append(int(answer.json()["results"][0]["id"]))

    mongo: AsyncMongoClient[dict] = AsyncMongoClient(mongo_server)  # type: ignore[type-arg]
    faces = mongo[mongo_db]["faces"]
    current = {d["_id"]: (bytes(d["facen"]), d["model"]) async for d in faces.find({})}
    model = current[ids[0]][1]
    # What an older model left: other vectors, in MongoDB and on the shard, under its name.
    rng = np.random.default_rng(3)
    shard_channel = grpc.aio.insecure_channel(indexer_address)
    shard = index_pb2_grpc.IndexShardStub(shard_channel)
    for face_id in ids:
        old = rng.standard_normal(128).astype("<f4").tobytes()
        await faces.update_one(
            {"_id": face_id}, {"$set": {"facen": Binary(old), "model": "dlib-resnet-v0@1"}}
        )
        await shard.Add(
            index_pb2.AddRequest(
                gallery="default",
                entries=[index_pb2.IndexEntry(id=face_id, vector=old)],
                upsert=True,
            )
        )

    async def regenerate(options: RegenerateOptions) -> tuple[int, int, int]:
        channels = ChannelPool()
        async with (
            grpc.aio.insecure_channel(controlplane_address) as plane,
            grpc.aio.insecure_channel(extractor_address) as extractor,
        ):
            report = await Regenerator(
                mongo,
                mongo_db,
                ExtractorClient(extractor, timeout=30),
                ControlPlane(plane, 10),
                Shards(channels, 10),
                options,
            ).run()
        await channels.close()
        return report.done, report.skipped, len(report.failed)

    # Split over two "machines": odd and even ids.
    halves = [await regenerate(RegenerateOptions(every=2, offset=k)) for k in (0, 1)]
    assert sum(h[0] for h in halves) == len(ids) and sum(h[2] for h in halves) == 0
    for face_id in ids:
        doc = await faces.find_one({"_id": face_id})
        assert doc is not None and doc["model"] == model
        made = np.frombuffer(bytes(doc["facen"]), "<f4")
        before = np.frombuffer(current[face_id][0], "<f4")
        assert np.abs(made - before).max() < 1e-4  # the normalized face gives the same vector
        stored = await shard.Get(index_pb2.GetRequest(gallery="default", ids=[face_id]))
        assert stored.entries[0].vector == bytes(doc["facen"])
    # Nothing left to do: every face has the extractor's model now.
    assert await regenerate(RegenerateOptions()) == (0, len(ids), 0)

    # Detecting again (the seed's --regenerate normalized,thumbs, for a new detector) redoes
    # faces the model made already, and finds the same face and the same vector.
    assert await regenerate(RegenerateOptions(redetect=True, restart=True)) == (len(ids), 0, 0)
    await faces.update_many({}, {"$set": {"model": "dlib-resnet-v0@1"}})
    assert await regenerate(RegenerateOptions(redetect=True, restart=True)) == (len(ids), 0, 0)
    doc = await faces.find_one({"_id": ids[1]})
    assert doc is not None
    made = np.frombuffer(bytes(doc["facen"]), "<f4")
    assert np.abs(made - np.frombuffer(current[ids[1]][0], "<f4")).max() < 1e-3
    normalized = await api.get(doc["normalized"])
    assert normalized.status_code == 200 and normalized.content[:4] == b"\x89PNG"
    await shard_channel.close()
    await mongo.close()


def test_the_redetected_face_is_the_one_overlapping_most() -> None:
    stored = BBox(10, 10, 110, 110)
    assert iou(stored, stored) == 1.0
    assert iou(stored, BBox(60, 10, 160, 110)) == 50 * 100 / (2 * 100 * 100 - 50 * 100)
    assert iou(stored, BBox(200, 200, 300, 300)) == 0.0
