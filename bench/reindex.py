"""`facegrid reindex`: faces/s of a rebuild and of the consistency check.

Starts SecantusDB (the one-machine stack's MongoDB), `--shards` index shard processes and the
local control plane, each as `facegrid up` starts them, in a temporary folder; writes `--faces`
face records with random `--dim` vectors in the gateway's record layout (without vectors on
the shards); then runs the command as a user would:

1. `facegrid reindex` into the empty shards (faces/s from its summary);
2. `facegrid reindex --check` (every id, a sample of vectors) and `--check --vectors` (every
   vector), both expected to find the shards consistent.

    python bench/reindex.py [--faces 100000] [--shards 2] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pymongo import AsyncMongoClient

from facegrid.gateway.core.model import BBox, Face
from facegrid.gateway.core.ports import NewFace
from facegrid.gateway.mongo import ACTIVE, MongoFaceStore, _doc
from facegrid.health import Probe, check


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(
    probe: Probe, process: subprocess.Popen[bytes], what: str, seconds: float = 60
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if check(probe, timeout=1.0)[0]:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not healthy after {seconds:.0f} s")


def start(folder: Path, shards: int) -> tuple[list[subprocess.Popen[bytes]], str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    processes = []
    mongo_port = free_port()
    mongo_uri = f"mongodb://127.0.0.1:{mongo_port}/?journal=true"
    secantus = Path(sys.executable).parent / "secantusd-py"
    command = [str(secantus), "--host", "127.0.0.1", "--port", str(mongo_port)]
    command += ["--storage-path", str(folder / "mongodb"), "--cache-size", "256M"]
    processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env))
    wait_healthy(Probe("mongodb", mongo_uri), processes[-1], "secantusd-py")

    entries = []
    for i in range(shards):
        listen = f"127.0.0.1:{free_port()}"
        shard_env = {
            **env,
            "FACEGRID_INDEXER_LISTEN": listen,
            "FACEGRID_INDEXER_METRICS_LISTEN": "",
            "FACEGRID_INDEXER_HTTP_LISTEN": "",
            "FACEGRID_INDEXER_SHARD_NAME": f"shard-{i}",
            "FACEGRID_INDEXER_DATA_DIR": str(folder / f"shard-{i}"),
            "FACEGRID_INDEXER_LOG_LEVEL": "warning",
        }
        processes.append(
            subprocess.Popen([sys.executable, "-m", "facegrid.indexer"], env=shard_env)
        )
        wait_healthy(Probe("grpc", listen), processes[-1], f"shard-{i}")
        entries.append(f"shard-{i}={listen}")

    plane = f"127.0.0.1:{free_port()}"
    plane_env = {
        **env,
        "FACEGRID_CONTROLPLANE_LISTEN": plane,
        "FACEGRID_CONTROLPLANE_METRICS_LISTEN": "",
        "FACEGRID_CONTROLPLANE_MONGO_URI": mongo_uri,
        "FACEGRID_CONTROLPLANE_MONGO_DB": "facegrid",
        "FACEGRID_CONTROLPLANE_SHARDS": ",".join(entries),
        "FACEGRID_CONTROLPLANE_LOG_LEVEL": "warning",
    }
    processes.append(
        subprocess.Popen([sys.executable, "-m", "facegrid.operator.local"], env=plane_env)
    )
    wait_healthy(Probe("grpc", plane), processes[-1], "control plane")
    return processes, mongo_uri, plane


async def seed(mongo_uri: str, faces: int, dim: int) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    store = MongoFaceStore(client, "facegrid")
    await store.ensure_indexes()
    collection = client["facegrid"]["faces"]
    rng = np.random.default_rng(1)
    when = dt.datetime.now(dt.UTC)
    for start in range(0, faces, 2000):
        ids = await store.next_ids(min(2000, faces - start))
        rows = rng.normal(size=(len(ids), dim)).astype("<f4")
        new = [
            NewFace(
                Face(
                    id=i,
                    bbox=BBox(0, 0, 10, 10),
                    meta=f"face {i}",
                    galleries=("default",),
                    photo="/media/x.jpg",
                    photo_hash="0" * 32,
                    timestamp=when,
                    model="bench",
                ),
                row.tobytes(),
            )
            for i, row in zip(ids, rows, strict=True)
        ]
        # The gateway's own record layout, written active at once: the stand-in takes minutes
        # over the gateway's insert-then-activate at this size.
        await collection.insert_many([{**_doc(face), "state": ACTIVE} for face in new])
    await client.close()


def reindex(mongo_uri: str, plane: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    command = [sys.executable, "-m", "facegrid", "reindex", "--mongo-uri", mongo_uri]
    command += ["--mongo-db", "facegrid", "--controlplane", plane, "--quiet", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"reindex {args} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def rate(summary: str, pattern: str) -> str:
    found = re.search(pattern, summary)
    if found is None:
        raise RuntimeError(f"no figures in:\n{summary}")
    return found.group(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--dim", type=int, default=128, help="the model's facen size is 128")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="facegrid-reindex-bench-") as tmp:
        processes, mongo_uri, plane = start(Path(tmp), args.shards)
        try:
            started = time.monotonic()
            asyncio.run(seed(mongo_uri, args.faces, args.dim))
            print(f"seeded {args.faces} face records in {time.monotonic() - started:.0f} s")
            built = reindex(mongo_uri, plane, "--batch", str(args.batch))
            print("reindex:       " + rate(built, r"Wrote .*faces/s\)"))
            sampled = reindex(mongo_uri, plane, "--check")
            print("check:         " + rate(sampled, r"Checked .*: consistent"))
            full = reindex(mongo_uri, plane, "--check", "--vectors")
            print("check vectors: " + rate(full, r"Checked .*: consistent"))
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(15)


if __name__ == "__main__":
    main()
