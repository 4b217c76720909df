"""`facegrid migrate` on the one-machine stack, under live traffic.

Starts `facegrid up` with a second extractor serving the same weights as another model (the
bundle under another version), given to the gateway as its extra extractor. Enrolls N real
photos from ../shared/data/faces, then measures identify latency for --quiet-seconds without a
migration (the baseline), and again while `facegrid migrate run --stack` moves every gallery to
the other model, with a second client enrolling photos meanwhile. Prints the migration's rate,
identify p50/p99 before and during, requests that failed, searches that did not find the query
photo's own face, and whether every face enrolled during the run ended in the new index.

    python bench/migrate.py --faces 300
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from gateway_latency import free_base, stack_data, start_stack
from pymongo import MongoClient
from regenerate import PHOTOS, photos

from facegrid.gateway.core.indexes import model_key
from facegrid.stack import read_state

NEXT_VERSION = "2026.11.1-next"


def next_bundle(bundle: Path, tmp: Path) -> Path:
    """The bundle as another model: the same files under version NEXT_VERSION."""
    folder = tmp / NEXT_VERSION
    shutil.copytree(bundle.resolve(), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = NEXT_VERSION
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def start_extractor(bundle: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    env.update(
        FACEGRID_EXTRACTOR_LISTEN=f"127.0.0.1:{port}",
        FACEGRID_EXTRACTOR_METRICS_LISTEN="",
        FACEGRID_EXTRACTOR_HTTP_LISTEN="",
        FACEGRID_EXTRACTOR_MODEL_DIR=str(bundle),
        FACEGRID_EXTRACTOR_LOG_LEVEL="warning",
    )
    return subprocess.Popen([sys.executable, "-m", "facegrid.extractor"], env=env)


class Traffic:
    """Identify the query photo in a loop (and optionally enroll photos) until stopped."""

    def __init__(self, client: httpx.Client, query: bytes) -> None:
        self._client = client
        self._query = query
        # A face enrolled from the query photo itself: the best match, at confidence ~1.
        self._own = hashlib.md5(query, usedforsecurity=False).hexdigest()
        self.latencies: list[float] = []
        self.failed = 0
        self.missed = 0
        self.enrolled: list[int] = []
        self.stop = threading.Event()

    def identify(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            answer = self._client.post(
                "/identify", files={"photo": self._query}, data={"n": "1", "threshold": "none"}
            )
            self.latencies.append(time.perf_counter() - started)
            if not answer.is_success:
                self.failed += 1
                continue
            matches = [m for ms in answer.json()["results"].values() for m in ms]
            if (
                not matches
                or matches[0]["face"]["photo_hash"] != self._own
                or matches[0]["confidence"] < 0.95
            ):
                self.missed += 1

    def enroll(self, photos: list[bytes]) -> None:
        for photo in photos:
            if self.stop.is_set():
                return
            answer = self._client.post("/face", files={"photo": photo})
            if answer.is_success:
                self.enrolled += [int(f["id"]) for f in answer.json()["results"]]
            else:
                self.failed += 1

    def figures(self) -> str:
        ms = np.array(self.latencies) * 1000
        return (
            f"{len(ms)} identifies, p50 {np.percentile(ms, 50):.0f} ms, "
            f"p99 {np.percentile(ms, 99):.0f} ms; {self.failed} failed requests, "
            f"{self.missed} searches without the query's own face at confidence >= 0.95"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=300)
    parser.add_argument("--quiet-seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = stack_data(tmp)
        base = free_base()
        extractor_port = base + 90
        bundle = next(p for p in (data / "models").iterdir())
        extractor = start_extractor(next_bundle(bundle, Path(tmp)), extractor_port)
        process, token = start_stack(
            data, base, {"FACEGRID_GATEWAY_EXTRA_EXTRACTORS": f"127.0.0.1:{extractor_port}"}
        )
        try:
            state = read_state(data)
            assert state is not None
            gateway = next(
                c["target"]
                for c in state["components"]  # type: ignore[union-attr]
                if c["name"] == "gateway"
            )
            client = httpx.Client(
                base_url=f"http://{gateway}/v1",
                headers={"Authorization": f"Token {token}"},
                timeout=60,
            )
            query = (PHOTOS / "face_recognition" / "examples" / "obama.jpg").read_bytes()
            started = time.perf_counter()
            faces = 0
            for photo in photos(args.faces):
                answer = client.post("/face", files={"photo": photo})
                if answer.is_success:
                    faces += len(answer.json()["results"])
            print(f"{faces} faces enrolled in {time.perf_counter() - started:.0f} s")

            quiet = Traffic(client, query)
            timer = threading.Timer(args.quiet_seconds, quiet.stop.set)
            timer.start()
            quiet.identify()
            print(f"without a migration: {quiet.figures()}")

            during = Traffic(client, query)
            threads = [
                threading.Thread(target=during.identify),
                threading.Thread(target=during.enroll, args=(photos(args.faces // 5),)),
            ]
            for thread in threads:
                thread.start()
            env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "facegrid",
                    "migrate",
                    "run",
                    "--stack",
                    "--data-dir",
                    str(data),
                    "--extractor",
                    f"127.0.0.1:{extractor_port}",
                    "-q",
                ],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            seconds = time.perf_counter() - started
            during.stop.set()
            for thread in threads:
                thread.join()
            print(done.stdout.strip() or done.stderr.strip())
            print(
                f"migration: {faces / seconds:.1f} faces/s over the enrolled faces "
                f"({seconds:.1f} s with process start and settle waits; exit {done.returncode})"
            )
            print(f"during the migration: {during.figures()}; {len(during.enrolled)} enrolled")

            mongo: MongoClient[dict[str, object]] = MongoClient(str(state["mongo_uri"]))
            db = mongo[str(state["mongo_db"])]
            plan = db["gallery_indexes"].find_one({"_id": "default"})
            assert plan is not None
            print(f"default gallery: active {plan['active']}")
            key = f"vectors.{model_key(str(plan['active']['model']))}"
            lacking = db["faces"].count_documents(
                {
                    "state": "active",
                    key: {"$exists": False},
                    "model": {"$ne": plan["active"]["model"]},
                }
            )
            print(f"active faces without a vector of the new model: {lacking}")
            mongo.close()
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
            extractor.terminate()
            extractor.wait(30)


if __name__ == "__main__":
    main()
