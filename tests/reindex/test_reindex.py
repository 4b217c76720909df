"""`facegrid reindex` against real servers: rebuilding empty shards, resuming after an
interruption (a limit, and kill -9 of the command), and the consistency check and repair."""

from __future__ import annotations

import asyncio
import io
import signal
import sys
from collections import Counter
from typing import Any

import grpc
import numpy as np
import pytest

from facegrid.gateway.mongo import MongoFaceStore
from facegrid.gateway.reindex.check import CheckOptions, check, summary
from facegrid.gateway.reindex.progress import Progress
from facegrid.gateway.reindex.rebuild import RebuildOptions, rebuild
from facegrid.gateway.reindex.topology import route_ids, slots_of
from facegrid.gateway.shards import ChannelPool, ControlPlanePlacements, Route, ShardCopies
from facegrid.slots import SLOT_COUNT, slot_of
from facegrid.v1 import controlplane_pb2 as cp
from facegrid.v1 import controlplane_pb2_grpc
from tests.reindex.reindex_servers import DIM, Served, Tools, enroll, vectors


async def _route(channel: grpc.aio.Channel, gallery: str) -> Route:
    stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
    return Route.from_wire(await stub.GetPlacement(cp.GetPlacementRequest(gallery=gallery)))


def _served(shards: list[Served], copies: ShardCopies) -> Served:
    return next(s for s in shards if s.shard.name == copies.name)


def _assert_on_owners(shards: list[Served], route: Route, ids: list[int]) -> None:
    for face_id in ids:
        owner = route.owner(face_id)
        for s in shards:
            assert s.holds(route.gallery, face_id) == (s.shard.name == owner.name), (
                route.gallery,
                face_id,
                s.shard.name,
            )


# -- routing ------------------------------------------------------------------------------------


def test_vectorised_routing_is_the_gateways() -> None:
    ids = np.random.default_rng(3).integers(0, 2**63, 5000, dtype=np.uint64)
    ids[:3] = [0, 1, 2**64 - 1]
    assert slots_of(ids).tolist() == [slot_of(int(i)) for i in ids]

    copies = tuple(ShardCopies(f"s{i}", f"127.0.0.1:{i + 1}") for i in range(3))
    owners = tuple(i * 2 // SLOT_COUNT for i in range(SLOT_COUNT))
    targets = tuple(i * 3 // SLOT_COUNT for i in range(SLOT_COUNT))  # mid-reshard to 3 shards
    route = Route("g", 4, copies, owners, targets)
    routed = route_ids(route, ids)
    for k, face_id in enumerate(ids.tolist()):
        writers = route.writers(face_id)
        assert copies[routed.owner[k]] == writers[0]
        assert {copies[routed.owner[k]], copies[routed.target[k]]} == set(writers)


def test_progress_line_shows_done_rate_and_eta() -> None:
    now = [100.0]
    out = io.StringIO()
    progress = Progress("reindex default", 1000, out, done=200, clock=lambda: now[0])
    now[0] = 102.0
    progress.advance(300)
    assert out.getvalue() == (
        "reindex default: 500/1000 faces (50.0%), 150 faces/s, elapsed 00:00:02, ETA 00:00:03\n"
    )


# -- rebuilding ---------------------------------------------------------------------------------


async def test_reindex_into_empty_shards_restores_search(
    face_store: MongoFaceStore,
    tools: Tools,
    shards: list[Served],
    create_gallery: Any,
    plane_channel: grpc.aio.Channel,
) -> None:
    await create_gallery("vip")
    await create_gallery("fg--persons")  # one of the gateway's own (person) galleries
    plain = await enroll(
        face_store, [("default", "vip") if k % 3 == 0 else ("default",) for k in range(600)]
    )
    hidden = await enroll(face_store, [("default",)] * 30, seed=8, hidden=("fg--persons",))
    assert not any(s.shard.stats().galleries for s in shards)

    out = io.StringIO()
    report = await rebuild(tools.records, tools.plane, tools.shards, RebuildOptions(), out)

    assert report.finished
    assert {g.gallery: (g.total, g.written) for g in report.galleries} == {
        "default": (630, 630),
        "fg--persons": (30, 30),
        "vip": (200, 200),
    }
    assert "reindex default: 630/630 faces (100.0%)" in out.getvalue()
    default, vip, persons = [
        await _route(plane_channel, g) for g in ("default", "vip", "fg--persons")
    ]
    everyone = [*plain, *hidden]
    _assert_on_owners(shards, default, everyone)
    _assert_on_owners(shards, vip, [i for i in plain if (i - min(plain)) % 3 == 0])
    _assert_on_owners(shards, persons, list(hidden))
    assert all(s.shard.stats().galleries for s in shards)  # the placement spreads them

    channels = ChannelPool()
    from facegrid.gateway.shards import ShardRouter

    router = ShardRouter(ControlPlanePlacements(plane_channel, 5.0), channels)
    for face_id in list(plain)[::50]:
        outcome = await router.search("default", plain[face_id], 3)
        assert outcome.hits[0][0] == face_id
        assert outcome.hits[0][1] == pytest.approx(0.0, abs=1e-3)
        assert (outcome.live, outcome.total) == (3, 3)
    await channels.close()

    checked = await check(tools.records, tools.plane, tools.shards, CheckOptions(vectors=True))
    assert checked.consistent, summary(checked)
    assert checked.faces == 860
    assert await tools.records.checkpoint("default") is None  # a finished run leaves none


async def test_a_limited_run_resumes_and_writes_each_face_once(
    face_store: MongoFaceStore, tools: Tools, shards: list[Served], plane_channel: grpc.aio.Channel
) -> None:
    faces = await enroll(face_store, [("default",)] * 700)

    first = await rebuild(
        tools.records, tools.plane, tools.shards, RebuildOptions(batch=100, limit=250)
    )
    assert not first.finished
    assert first.written == 250
    point = await tools.records.checkpoint("default")
    assert point is not None
    assert point.last_id == sorted(faces)[249]
    assert not point.done

    second = await rebuild(tools.records, tools.plane, tools.shards, RebuildOptions(batch=100))
    assert second.finished
    assert (second.galleries[0].resumed_from, second.galleries[0].written) == (250, 450)
    added = Counter(i for s in shards for i in s.added)
    assert sorted(added) == sorted(faces)
    assert set(added.values()) == {1}
    _assert_on_owners(shards, await _route(plane_channel, "default"), list(faces))

    # A later run starts over (the finished run cleared its checkpoint), or with --restart.
    third = await rebuild(
        tools.records, tools.plane, tools.shards, RebuildOptions(restart=True, limit=10)
    )
    assert third.galleries[0].resumed_from == 0


async def _reindex_cli(
    plane_address: str, mongo_server: str, mongo_db: str, env: dict[str, str], *args: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "facegrid",
        "reindex",
        "--mongo-uri",
        mongo_server,
        "--mongo-db",
        mongo_db,
        "--controlplane",
        plane_address,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def test_killed_reindex_resumes_from_its_checkpoint(
    face_store: MongoFaceStore,
    tools: Tools,
    shards: list[Served],
    plane_channel: grpc.aio.Channel,
    plane_address: str,
    mongo_server: str,
    mongo_db: str,
    cli_env: dict[str, str],
) -> None:
    faces = await enroll(face_store, [("default",)] * 3000)
    batch = 25
    first_id = min(faces)

    process = await _reindex_cli(
        plane_address, mongo_server, mongo_db, cli_env, "--batch", str(batch), "--quiet"
    )
    while True:
        point = await tools.records.checkpoint("default")
        if point is not None and point.last_id >= first_id + 500:
            break
        assert process.returncode is None, await process.communicate()
        await asyncio.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    await process.communicate()
    assert process.returncode == -signal.SIGKILL
    point = await tools.records.checkpoint("default")
    assert point is not None
    assert not point.done
    assert point.last_id < max(faces)  # killed mid-run

    process = await _reindex_cli(
        plane_address, mongo_server, mongo_db, cli_env, "--batch", str(batch)
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    resumed = sum(1 for i in faces if i <= point.last_id)
    row = next(line.split() for line in stdout.decode().splitlines() if line.startswith("default"))
    assert row == ["default", "3000", str(resumed), str(3000 - resumed), "0", "done"]
    added = Counter(i for s in shards for i in s.added)
    assert sorted(added) == sorted(faces)
    # At most the batch in flight when it was killed is written twice.
    assert sum(added.values()) - len(faces) <= batch
    _assert_on_owners(shards, await _route(plane_channel, "default"), list(faces))


# -- checking -----------------------------------------------------------------------------------


async def test_check_finds_injected_differences_and_repair_fixes_them(
    face_store: MongoFaceStore,
    tools: Tools,
    shards: list[Served],
    plane_channel: grpc.aio.Channel,
    plane_address: str,
    mongo_server: str,
    mongo_db: str,
    cli_env: dict[str, str],
) -> None:
    faces = await enroll(face_store, [("default",)] * 300)
    await rebuild(tools.records, tools.plane, tools.shards, RebuildOptions())
    route = await _route(plane_channel, "default")
    ids = sorted(faces)
    by_name = {s.shard.name: s for s in shards}

    def on(face_id: int) -> Served:
        return by_name[route.owner(face_id).name]

    def other_than(served: Served) -> Served:
        return next(s for s in shards if s is not served)

    def put(served: Served, gallery: str, face_id: int, vector: bytes) -> None:
        served.shard.add(
            gallery,
            np.array([face_id], np.uint64),
            np.frombuffer(vector, "<f4")[None, :],
            upsert=True,
        )

    def drop(served: Served, face_id: int) -> None:
        served.shard.delete("default", np.array([face_id], np.uint64))

    lost, moved, altered = ids[10], ids[20], ids[30]
    drop(on(lost), lost)  # a deleted vector
    drop(on(moved), moved)  # a face on the wrong shard
    wrong = other_than(on(moved))
    put(wrong, "default", moved, faces[moved])
    orphan = 10**12  # a vector MongoDB knows nothing of
    put(shards[0], "default", orphan, vectors(1, 99)[0].tobytes())
    put(on(altered), "default", altered, vectors(1, 98)[0].tobytes())  # another vector
    put(shards[1], "ghost", 5, vectors(1, 97)[0].tobytes())  # a gallery no one knows
    # An enrollment that died after writing its vector: pending, neither required nor orphaned.
    (stale,) = await enroll(face_store, [("default",)], seed=5, activate=False)
    stale_vector = (await tools.records.vectors_of([stale]))[stale]
    put(on(stale), "default", stale, stale_vector)

    found = await check(tools.records, tools.plane, tools.shards, CheckOptions(vectors=True))
    report = {s.shard: s for s in found.galleries[0].shards}
    assert report[on(lost).shard.name].missing.tolist().count(lost) == 1
    assert moved in report[on(moved).shard.name].missing.tolist()
    assert report[wrong.shard.name].misplaced.tolist() == [moved]
    assert report[shards[0].shard.name].orphaned.tolist() == [orphan]
    assert report[on(altered).shard.name].mismatched == [altered]
    assert found.stray == [(shards[1].shard.name, "ghost", 1)]
    assert (found.pending.seen, found.pending.removed) == (1, 0)
    assert found.differences == 6  # lost, moved (missing + misplaced), orphan, altered, ghost
    assert not found.consistent
    assert all(s.compared == s.required - len(s.missing) for s in report.values())

    # The command says so in its exit status, and repairs when asked.
    common = (plane_address, mongo_server, mongo_db, cli_env)
    process = await _reindex_cli(*common, "--check", "--vectors", "--quiet")
    stdout, stderr = await process.communicate()
    assert process.returncode == 1, stderr.decode()
    assert "6 differences; run with --repair to fix them" in stdout.decode()
    assert f"orphaned: {orphan}" in stdout.decode()

    process = await _reindex_cli(
        *common, "--check", "--vectors", "--repair", "--pending-grace", "0", "--quiet"
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode() + stdout.decode()
    assert "1 removed" in stdout.decode()

    after = await check(tools.records, tools.plane, tools.shards, CheckOptions(vectors=True))
    assert after.consistent, summary(after)
    assert after.differences == 0
    assert after.pending.seen == 0
    assert await face_store.get(stale) is None  # the interrupted enrollment is undone
    assert not any(s.holds("default", stale) for s in shards)
    assert not any(s.holds("default", orphan) for s in shards)
    assert "ghost" not in {g.name for g in shards[1].shard.stats().galleries}
    _assert_on_owners(shards, route, ids)
    held = on(altered).shard.get("default", np.array([altered], np.uint64))[1][0]
    assert held.tobytes() == faces[altered]
    assert held.shape == (DIM,)


async def test_check_of_one_gallery_and_unknown_gallery(
    face_store: MongoFaceStore, tools: Tools, shards: list[Served], create_gallery: Any
) -> None:
    await create_gallery("vip")
    await enroll(face_store, [("default", "vip")] * 50)
    await rebuild(tools.records, tools.plane, tools.shards, RebuildOptions(gallery="vip"))

    vip = await check(tools.records, tools.plane, tools.shards, CheckOptions(gallery="vip"))
    assert vip.consistent and [g.gallery for g in vip.galleries] == ["vip"]
    assert vip.galleries[0].shards[0].compared > 0
    default = await check(tools.records, tools.plane, tools.shards, CheckOptions(gallery="default"))
    assert sum(len(s.missing) for s in default.galleries[0].shards) == 50

    from facegrid.gateway.reindex.topology import TopologyError

    with pytest.raises(TopologyError, match="does not exist") as raised:
        await check(tools.records, tools.plane, tools.shards, CheckOptions(gallery="nope"))
    assert not raised.value.retry
