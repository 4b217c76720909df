"""kill -9 a shard while a client streams adds and deletes: no acknowledged write is lost or undone.

A real `facegrid-indexer` process is killed at a random moment, over and over, with snapshots
every few dozen writes so that some kills land during a snapshot. After each restart, every
acknowledged add must be there and every acknowledged delete must stay deleted; only the one
write in flight at the kill may go either way.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from facegrid.v1 import index_pb2 as pb
from facegrid.v1 import index_pb2_grpc
from tests.conftest import free_port
from tests.indexer.processes import start_indexer, wait_ready

ROUNDS = 20


def _start(data: Path, port: int, primary: str = "") -> subprocess.Popen[bytes]:
    follow = {"role": "follower", "primary": primary} if primary else {}
    return start_indexer(data, port, snapshot_every="40", **follow)


def _stored_ids(stub: index_pb2_grpc.IndexShardStub) -> set[int]:
    stats = stub.Stats(pb.StatsRequest())
    if "g" not in {g.name for g in stats.galleries}:
        return set()
    listed: list[int] = []
    after = 0
    while True:
        page = stub.List(pb.ListRequest(gallery="g", after_id=after, limit=1000))
        listed += page.ids
        if not page.more:
            return set(listed)
        after = page.ids[-1]


def _stream(
    stub: index_pb2_grpc.IndexShardStub,
    acknowledged: dict[int, bool],
    counter: list[int],
    in_flight: list[int],
    stop: threading.Event,
    rng: random.Random,
    vector: bytes,
) -> None:
    """Add new faces and delete acknowledged ones until the shard dies or stop is set."""
    while not stop.is_set():
        live = [i for i, present in acknowledged.items() if present]
        try:
            if live and rng.random() < 0.3:
                victim = rng.choice(live)
                in_flight[:] = [victim]
                stub.Delete(pb.DeleteRequest(gallery="g", ids=[victim]), timeout=5)
                acknowledged[victim] = False
            else:
                face_id = counter[0]
                counter[0] += 1
                in_flight[:] = [face_id]
                entry = pb.IndexEntry(id=face_id, vector=vector)
                stub.Add(pb.AddRequest(gallery="g", entries=[entry]), timeout=5)
                acknowledged[face_id] = True
        except grpc.RpcError:
            return  # the shard was killed; in_flight names the write left undecided
        in_flight.clear()


def _content(stub: index_pb2_grpc.IndexShardStub) -> tuple[int, dict[int, bytes]]:
    ids = sorted(_stored_ids(stub))
    vectors = {}
    for start in range(0, len(ids), 500):
        got = stub.Get(pb.GetRequest(gallery="g", ids=ids[start : start + 500]))
        vectors.update({e.id: e.vector for e in got.entries})
    return stub.Stats(pb.StatsRequest()).lsn, vectors


def test_no_acknowledged_write_is_lost_or_resurrected(tmp_path: Path, unused_port: int) -> None:
    """Also runs a follower throughout, which must end equal to its primary."""
    rng = random.Random(11)  # when to kill
    vector = np.ones(16, "<f4").tobytes()
    acknowledged: dict[int, bool] = {}  # id -> present
    counter = [1]  # the next face id
    address = f"127.0.0.1:{unused_port}"
    follower_port = free_port()
    follower = _start(tmp_path / "follower", follower_port, primary=address)
    try:
        _kill_rounds(tmp_path / "primary", unused_port, rng, vector, acknowledged, counter)
        primary = _start(tmp_path / "primary", unused_port)
        with (
            grpc.insecure_channel(address) as primary_channel,
            grpc.insecure_channel(f"127.0.0.1:{follower_port}") as follower_channel,
        ):
            primary_stub = index_pb2_grpc.IndexShardStub(primary_channel)
            follower_stub = index_pb2_grpc.IndexShardStub(follower_channel)
            wait_ready(primary_stub, primary)
            wait_ready(follower_stub, follower)
            expected = _content(primary_stub)
            deadline = time.monotonic() + 30
            while follower_stub.Stats(pb.StatsRequest()).lsn != expected[0]:
                assert time.monotonic() < deadline, "the follower never caught up"
                time.sleep(0.05)
            assert _content(follower_stub) == expected
            assert follower_stub.Stats(pb.StatsRequest()).role == "follower"
        primary.kill()
        primary.wait()
    finally:
        follower.kill()
        follower.wait()
    deleted = sum(1 for present in acknowledged.values() if not present)
    print(f"{ROUNDS} kills; {counter[0] - 1} adds and {deleted} deletes acknowledged and checked")
    assert counter[0] > 100, "the client barely wrote anything between kills"
    assert any(not present for present in acknowledged.values())


def _kill_rounds(
    data: Path,
    port: int,
    rng: random.Random,
    vector: bytes,
    acknowledged: dict[int, bool],
    counter: list[int],
) -> None:
    address = f"127.0.0.1:{port}"
    for _round in range(ROUNDS):
        process = _start(data, port)
        with grpc.insecure_channel(address) as channel:
            stub = index_pb2_grpc.IndexShardStub(channel)
            wait_ready(stub, process)

            # Everything acknowledged so far survived the previous kill.
            stored = _stored_ids(stub)
            for face_id, present in acknowledged.items():
                assert (face_id in stored) == present, (face_id, present)

            in_flight: list[int] = []
            stop = threading.Event()
            writer = threading.Thread(
                target=_stream,
                args=(stub, acknowledged, counter, in_flight, stop, random.Random(_round), vector),
            )
            writer.start()
            time.sleep(rng.uniform(0.05, 0.4))
            process.send_signal(signal.SIGKILL)
            process.wait()
            stop.set()
            writer.join(10)
            # The write in flight at the kill may or may not have landed.
            for face_id in in_flight:
                acknowledged.pop(face_id, None)
