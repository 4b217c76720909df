"""Zero-downtime model migration (`facegrid migrate`) through a real gateway in process.

The new model is the real bundle under another version, with its face-vector graph followed by
a negation: its vectors match each other exactly as well as the old model's do, and a face's
new vector lies as far from its old one as vectors get. A search that mixed the models (an old
query against new vectors, or the reverse) finds nothing like the same face, so every identify
below that finds its face with a confidence near 1 shows that no search mixed them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnx
import pytest
from onnx import helper
from pymongo import AsyncMongoClient

from facegrid.files import sha256_of
from facegrid.gateway.core.indexes import model_key, shadow_index
from facegrid.gateway.extractor_client import ExtractorClient
from facegrid.gateway.reindex.check import CheckOptions, check
from facegrid.gateway.reindex.check import summary as check_summary
from facegrid.gateway.reindex.migrate import MigrateOptions, Migrator
from facegrid.gateway.reindex.rebuild import RebuildOptions, rebuild
from facegrid.gateway.reindex.regenerate import RegenerateOptions, Regenerator
from facegrid.gateway.reindex.store import FaceRecords
from facegrid.gateway.reindex.topology import ControlPlane, Shards, TopologyError
from facegrid.gateway.shards import ChannelPool
from tests.conftest import FACES, serve_extractor

EXAMPLES = FACES / "face_recognition" / "examples"
OBAMA = (EXAMPLES / "obama.jpg").read_bytes()
OBAMA2 = (EXAMPLES / "obama2.jpg").read_bytes()
BIDEN = (EXAMPLES / "biden.jpg").read_bytes()
# Other people, enrolled while the migration runs.
LATE = [
    FACES / "face_recognition" / "examples" / name
    for name in ("alex-lacamoire.png", "lin-manuel-miranda.png")
]
NEXT_VERSION = "2026.11.1-negated"


@pytest.fixture(scope="session")
def next_bundle(model_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real bundle as another model: version NEXT_VERSION, face vectors negated."""
    folder = tmp_path_factory.mktemp("next-models") / NEXT_VERSION
    shutil.copytree(model_bundle, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (entry,) = [m for m in manifest["models"] if m["task"] == "facen"]
    graph_file = folder / entry["file"]
    model = onnx.load(graph_file)
    (output,) = model.graph.output
    for node in model.graph.node:
        node.output[:] = [f"{o}_kept" if o == output.name else o for o in node.output]
    model.graph.node.append(helper.make_node("Neg", [f"{output.name}_kept"], [output.name]))
    onnx.save(model, graph_file)
    entry["sha256"] = sha256_of(graph_file)
    manifest["version"] = NEXT_VERSION
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="session")
def next_extractor_address(next_bundle: Path) -> Iterator[str]:
    yield from serve_extractor(next_bundle)


@pytest.fixture
def extra_extractors(next_extractor_address: str) -> list[str]:
    """The gateway is given an extractor of the new model besides its default one."""
    return [next_extractor_address]


class Tools:
    def __init__(self, mongo_server: str, mongo_db: str, plane: str, extractor: str) -> None:
        self.mongo: AsyncMongoClient[dict] = AsyncMongoClient(mongo_server, tz_aware=True)  # type: ignore[type-arg]
        self.db = mongo_db
        self.channels = ChannelPool()
        self.plane_channel = grpc.aio.insecure_channel(plane)
        self.extractor_channel = grpc.aio.insecure_channel(extractor)
        self.plane = ControlPlane(self.plane_channel, 10)
        self.shards = Shards(self.channels, 10)
        self.extractor = ExtractorClient(self.extractor_channel, timeout=30)
        self.records = FaceRecords(self.mongo, mongo_db)

    def migrator(self, **options: object) -> Migrator:
        return Migrator(
            self.mongo,
            self.db,
            self.extractor,
            self.plane,
            self.shards,
            MigrateOptions(settle=0.5, batch=2, **options),  # type: ignore[arg-type]
        )

    async def held(self, index: str) -> set[int]:
        (route,) = await self.plane.routes(index)
        return {int(i) for s in route.shards for i in await self.shards.list_ids(s, route.gallery)}

    async def assert_consistent(self) -> None:
        audit = await check(self.records, self.plane, self.shards, CheckOptions(vectors=True))
        assert audit.consistent and audit.differences == 0, check_summary(audit)

    async def plan(self, gallery: str) -> dict:  # type: ignore[type-arg]
        found = await self.mongo[self.db]["gallery_indexes"].find_one({"_id": gallery})
        assert found is not None
        return found

    async def close(self) -> None:
        await self.plane_channel.close()
        await self.extractor_channel.close()
        await self.channels.close()
        await self.mongo.close()


@pytest.fixture
async def tools(
    mongo_server: str, mongo_db: str, controlplane_address: str, next_extractor_address: str
) -> AsyncIterator[Tools]:
    made = Tools(mongo_server, mongo_db, controlplane_address, next_extractor_address)
    yield made
    await made.close()


async def _enroll(api: httpx.AsyncClient, photo: bytes, **fields: str) -> int:
    response = await api.post("/v0/face", files={"photo": ("p.jpg", photo)}, data=fields)
    assert response.status_code == 200, response.text
    (face,) = response.json()["results"]
    return int(face["id"])


async def _best(
    api: httpx.AsyncClient, photo: bytes, gallery: str = "default"
) -> tuple[int, float]:
    """The best match's (face id, confidence); (0, 0.0) if none."""
    found = await api.post(
        f"/v0/faces/gallery/{gallery}/identify",
        files={"photo": ("q.jpg", photo)},
        data={"n": "1", "threshold": "none"},
    )
    assert found.status_code == 200, found.text
    (matches,) = found.json()["results"].values()
    return (int(matches[0]["face"]["id"]), matches[0]["confidence"]) if matches else (0, 0.0)


async def test_galleries_move_to_the_new_model_while_searched_and_enrolled(
    api: httpx.AsyncClient, tools: Tools
) -> None:
    assert (await api.post("/v0/galleries/vip")).status_code == 201
    obama = await _enroll(api, OBAMA, galleries='["vip"]')
    biden = await _enroll(api, BIDEN)
    old_model = await tools.mongo[tools.db]["faces"].find_one({"_id": obama})
    assert old_model is not None and not old_model["model"].endswith(NEXT_VERSION)

    # Searches and enrollments go on while the migration runs.
    seen: list[tuple[int, float]] = []
    late: list[int] = []
    migrating = True

    async def traffic() -> None:
        photos = [p.read_bytes() for p in LATE]
        while migrating:
            seen.append(await _best(api, OBAMA))
            if photos:
                late.append(await _enroll(api, photos.pop()))

    running = asyncio.create_task(traffic())
    report = await tools.migrator().run()
    migrating = False
    await running

    assert report.model.endswith(NEXT_VERSION)
    assert {g.gallery: g.outcome for g in report.galleries} == {
        "default": "switched",
        "vip": "switched",
    }
    assert len(seen) >= 3 and len(late) == 2
    # Every search, before, during and after the switch, found the face as itself.
    assert all(face == obama and confidence > 0.95 for face, confidence in seen), seen

    default, vip = await tools.plan("default"), await tools.plan("vip")
    assert default["active"] == {
        "model": report.model,
        "index": shadow_index("default", report.model),
    }
    assert default["previous"] == {"model": old_model["model"], "index": "default"}
    assert vip["active"]["index"] == shadow_index("vip", report.model)
    # The new index holds every face, those enrolled mid-migration too; the old one was kept
    # current all along.
    everyone = {obama, biden, *late}
    assert await tools.held(default["active"]["index"]) == everyone
    assert await tools.held("default") == everyone
    assert await tools.held(vip["active"]["index"]) == {obama}

    # MongoDB keeps the new model's vector beside the old one: the negation of it.
    doc = await tools.mongo[tools.db]["faces"].find_one({"_id": obama})
    assert doc is not None
    old = np.frombuffer(doc["facen"], "<f4")
    new = np.frombuffer(doc["vectors"][model_key(report.model)], "<f4")
    assert np.abs(new + old).max() < 0.02 and np.abs(new - old).max() > 0.05

    # A face enrolled after the switch lands in both, and is found on another photo.
    later = await _enroll(api, OBAMA2, galleries='["vip"]')
    assert later in await tools.held(vip["active"]["index"])
    assert later in await tools.held("vip")
    assert (await _best(api, OBAMA, "vip"))[0] in {obama, later}

    # `reindex --check` compares each index with its model's vectors: all consistent.
    await tools.assert_consistent()

    # Confirmed: the old index is emptied; searches go on unchanged, from the new one.
    assert sorted(await tools.migrator().confirm()) == ["default", "vip"]
    assert await tools.held("default") == set()
    assert "previous" not in await tools.plan("default")
    assert await _best(api, BIDEN) == (biden, pytest.approx(1.0, abs=0.05))
    await tools.assert_consistent()
    # `reindex` rebuilds the new index from the new model's vectors (and the old one empty).
    built = await rebuild(tools.records, tools.plane, tools.shards, RebuildOptions(drop=True))
    assert built.finished
    assert await tools.held(default["active"]["index"]) == everyone | {later}
    assert await tools.held("default") == set()
    assert await _best(api, BIDEN) == (biden, pytest.approx(1.0, abs=0.05))

    # A deleted face leaves the new index; a deleted gallery takes its index with it.
    assert (await api.delete(f"/v0/face/id/{biden}")).status_code == 204
    assert biden not in await tools.held(default["active"]["index"])
    assert (await api.delete("/v0/galleries/vip")).status_code == 204
    galleries = {r.gallery for r in await tools.plane.routes()}
    assert vip["active"]["index"] not in galleries
    assert await tools.mongo[tools.db]["gallery_indexes"].find_one({"_id": "vip"}) is None


async def test_a_built_shadow_waits_for_the_switch_and_a_switch_rolls_back(
    api: httpx.AsyncClient, tools: Tools
) -> None:
    obama = await _enroll(api, OBAMA)
    ready = await tools.migrator(switch=False).run()
    assert [g.outcome for g in ready.galleries] == ["ready"]
    plan = await tools.plan("default")
    assert plan["active"]["index"] == "default" and plan["shadow"]["state"] == "ready"
    (status,) = await tools.migrator().status()
    assert status.startswith("default: dlib-resnet-v1@") and "ready" in status
    # Not switched: a face enrolled now is written to the shadow as well.
    biden = await _enroll(api, BIDEN)
    assert await tools.held(plan["shadow"]["index"]) == {obama, biden}

    # What a gateway without the new model's extractor leaves: a face missing from the shadow.
    (route,) = await tools.plane.routes(plan["shadow"]["index"])
    await tools.shards.delete(route.shards[0], route.gallery, [biden])

    # A ready shadow is caught up again on every run, before any switch.
    again = await tools.migrator(switch=False).run()
    assert [(g.outcome, g.built) for g in again.galleries] == [("ready", 1)]
    assert await tools.held(plan["shadow"]["index"]) == {obama, biden}

    switched = await tools.migrator().run()
    assert [(g.outcome, g.built) for g in switched.galleries] == [("switched", 0)]
    assert await tools.migrator().rollback() == ["default"]
    plan = await tools.plan("default")
    assert plan["active"]["index"] == "default" and "previous" not in plan
    await asyncio.sleep(0.5)  # the gateway's plans are 0.2 s old at most
    assert await _best(api, OBAMA) == (obama, pytest.approx(1.0, abs=0.05))
    # Running again switches at once; the shadow was kept current while rolled back.
    again = await tools.migrator().run()
    assert [(g.outcome, g.built) for g in again.galleries] == [("switched", 0)]
    assert await tools.migrator().abort() == []


async def test_regenerate_refuses_galleries_a_migration_moved(
    api: httpx.AsyncClient, tools: Tools
) -> None:
    await _enroll(api, OBAMA)
    await tools.migrator(switch=False).run()
    regenerator = Regenerator(
        tools.mongo,
        tools.db,
        tools.extractor,
        tools.plane,
        tools.shards,
        RegenerateOptions(),
    )
    with pytest.raises(TopologyError, match="facegrid migrate"):
        await regenerator.run()


async def test_the_migrate_command_runs_reports_and_confirms(
    api: httpx.AsyncClient,
    tools: Tools,
    mongo_server: str,
    mongo_db: str,
    controlplane_address: str,
    next_extractor_address: str,
) -> None:
    obama = await _enroll(api, OBAMA)

    async def migrate(*args: str) -> tuple[int, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "facegrid",
            "migrate",
            *args,
            "--mongo-uri",
            mongo_server,
            "--mongo-db",
            mongo_db,
            "--controlplane",
            controlplane_address,
            "--extractor",
            next_extractor_address,
            "--settle",
            "0.5",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        out, _ = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode()

    code, out = await migrate("run", "--gallery", "nope")
    assert code == 2 and "no such gallery: nope" in out
    code, out = await migrate("run", "-q")
    assert code == 0, out
    assert "default: switched (1 built" in out
    code, out = await migrate("status")
    assert code == 0 and f"{NEXT_VERSION} (index fg--mx-" in out and "not confirmed" in out
    code, out = await migrate("confirm")
    assert code == 0 and out.strip() == "confirm: default"
    assert await _best(api, OBAMA) == (obama, pytest.approx(1.0, abs=0.05))
