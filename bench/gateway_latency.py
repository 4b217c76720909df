"""The REST API under load, on the one-machine stack (`facegrid up`) with many faces enrolled.

Starts `facegrid up` in a temporary folder with the model bundle, enrols `--faces` synthetic
faces straight into MongoDB and the index shard (the API would take hours to enrol 100k photos
on 2 cores) plus a few real ones through the API, then measures with real 640x480 photos:
- one client: p50/p99 latency of /v1/identify, /v1/face and /v1/faces paging, and the
  gateway's own share of each (total minus the time waiting on extractor, shards and MongoDB,
  from the Server-Timing header);
- `wrk` (a real HTTP load generator, `apt-get install wrk`) at concurrency 8 for `--seconds` on
  /v1/identify: requests/s, latency, errors, and the gateway's memory before and after.

    FACEGRID_MODEL_CACHE=... python bench/gateway_latency.py [--faces 100000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import grpc
import httpx
import numpy as np
import psutil
from bson import Binary
from pymongo import MongoClient

from facegrid.extractor.bundle import build
from facegrid.extractor.core.models import BUNDLE_VERSION
from facegrid.stack import PORTS, SHARD_PORT
from facegrid.v1 import index_pb2, index_pb2_grpc

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
EXAMPLES = FACES / "face_recognition" / "examples"


def photo_640x480(name: str) -> bytes:
    """The photo scaled to fit a 640x480 frame (aspect kept), centred on grey."""
    image = cv2.imread(str(EXAMPLES / name))
    assert image is not None, name
    scale = min(640 / image.shape[1], 480 / image.shape[0])
    fitted = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    frame = np.full((480, 640, 3), 128, np.uint8)
    top, left = (480 - fitted.shape[0]) // 2, (640 - fitted.shape[1]) // 2
    frame[top : top + fitted.shape[0], left : left + fitted.shape[1]] = fitted
    return cv2.imencode(".jpg", frame)[1].tobytes()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def free_base() -> int:
    while True:
        base = random.randrange(20_000, 32_000, 100)
        try:
            for port in range(base, base + 100):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue


def add_setting_option(parser: argparse.ArgumentParser) -> None:
    """--setting FACEGRID_NAME=VALUE (repeatable), for start_stack's settings."""
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="FACEGRID_NAME=VALUE",
        help="a setting for the stack's services (repeatable)",
    )


def stack_data(tmp: str) -> Path:
    """A data folder for `facegrid up` in tmp, with the model bundle built and linked in.

    FACEGRID_BENCH_MODELS names a folder where the bundle is built once and kept for later
    runs (a machine without the model packages can be given a bundle built elsewhere)."""
    data = Path(tmp) / "data"
    models = os.environ.get("FACEGRID_BENCH_MODELS") or Path(tmp) / "models"
    bundle = build(Path(models), progress=lambda _line: None).path
    (data / "models").mkdir(parents=True)
    (data / "models" / BUNDLE_VERSION).symlink_to(bundle, target_is_directory=True)
    return data


def start_stack(
    data: Path, base: int, settings: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """`facegrid up` on data; settings: FACEGRID_* variables for its services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    env["FACEGRID_GATEWAY_FETCH_ALLOW"] = "127.0.0.0/8"
    env.update(settings or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "facegrid", "up", "--data-dir", str(data), "--port-base", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    token = ""
    assert process.stdout is not None
    seen: list[str] = []
    for line in process.stdout:
        seen.append(line)
        if line.strip().startswith("Token:"):
            token = line.split()[-1]
        if "Press Ctrl-C to stop." in line:
            break
    else:
        raise RuntimeError(f"facegrid up exited ({process.wait()}):\n" + "".join(seen[-40:]))
    threading.Thread(target=_drain, args=(process,), daemon=True).start()
    return process, token


def _drain(process: subprocess.Popen[str]) -> None:
    """Reads the stack's output to its end, into FACEGRID_BENCH_STACK_LOG if that is set."""
    path = os.environ.get("FACEGRID_BENCH_STACK_LOG")
    with open(path or os.devnull, "a") as log:
        for line in process.stdout or []:
            log.write(line)


def enrol_synthetic(base: int, count: int) -> None:
    """Face-like vectors (bench/indexer_facelike.py's model of our vectors on real photos),
    written as the gateway writes them (Mongo + shard). Plain Gaussian noise would not do: HNSW
    cannot find a real face among noise reliably (see that bench's stress case)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from indexer_facelike import FaceModel, face_like, face_vectors

    real, labels = face_vectors()
    synthetic = face_like(FaceModel.fit(real, labels, 0.0), count, 4, 1, seed=0).vectors
    mongo: MongoClient[dict[str, Any]] = MongoClient(
        f"mongodb://127.0.0.1:{base + PORTS['mongodb']}"
    )
    faces = mongo["facegrid"]["faces"]
    shard = f"127.0.0.1:{base + SHARD_PORT}"
    start = time.perf_counter()
    with grpc.insecure_channel(shard) as channel:
        stub = index_pb2_grpc.IndexShardStub(channel)
        for lo in range(0, count, 5000):
            ids = list(range(lo + 1, min(lo + 5000, count) + 1))
            vectors = synthetic[lo : lo + len(ids)].astype("<f4")
            now = dt.datetime.now(dt.UTC)
            faces.insert_many(
                [
                    {
                        "_id": i,
                        "state": "active",
                        "meta": f"person {i // 4}",
                        "galleries": ["default"],
                        "photo": f"/media/synthetic-{i}.jpg",
                        "photo_hash": f"{i:032x}",
                        "timestamp": now,
                        "bbox": {"x1": 10, "y1": 10, "x2": 110, "y2": 110},
                        "thumbnail": "",
                        "normalized": "",
                        "model": "synthetic",
                        "facen": Binary(v.tobytes()),
                    }
                    for i, v in zip(ids, vectors, strict=True)
                ]
            )
            stub.Add(
                index_pb2.AddRequest(
                    gallery="default",
                    entries=[
                        index_pb2.IndexEntry(id=i, vector=v.tobytes())
                        for i, v in zip(ids, vectors, strict=True)
                    ],
                ),
                timeout=120,
            )
        mongo["facegrid"]["counters"].update_one(
            {"_id": "faces"}, {"$set": {"seq": count}}, upsert=True
        )
        print(f"enrolled {count:,} synthetic faces in {time.perf_counter() - start:.0f} s")
        while True:  # measure on a built graph, not while the builder catches up
            stats = stub.Stats(index_pb2.StatsRequest(), timeout=30)
            # Galleries below the shard's graph_min (10,000 by default) stay exact.
            if all(g.unindexed == 0 or g.count < 10_000 for g in stats.galleries):
                break
            time.sleep(1)
    print(f"graph built {time.perf_counter() - start:.0f} s after the first add")


def server_timing(response: httpx.Response) -> dict[str, float]:
    header = response.headers.get("Server-Timing", "")
    return {
        name.strip(): float(value)
        for name, value in (p.split(";dur=") for p in header.split(",") if ";dur=" in p)
    }


def measure(label: str, call: Any, runs: int) -> None:
    totals, own = [], []
    for _ in range(runs):
        started = time.perf_counter()
        response = call()
        totals.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
        own.append(server_timing(response)["gateway"])
    t, g = np.array(totals), np.array(own)
    print(
        f"{label:32s} p50 {np.percentile(t, 50):7.1f} ms  p99 {np.percentile(t, 99):7.1f} ms  "
        f"{1000 / t.mean():5.1f} req/s;  gateway's own share p50 {np.percentile(g, 50):.2f} ms "
        f"(p99 {np.percentile(g, 99):.2f}) [target <= 5 ms at p50]"
    )


def run_wrk(url: str, token: str, photo_url: str, seconds: int) -> None:
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk): load run skipped")
        return
    script = Path(tempfile.mkdtemp()) / "identify.lua"
    body = json.dumps({"photo": photo_url})
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Token {token}"\n'
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("non-2xx or failed: %d\\n", summary.errors.status + '
        "summary.errors.connect + summary.errors.read + summary.errors.write + "
        "summary.errors.timeout))\n"
        "end\n"
    )
    result = subprocess.run(
        ["wrk", "-t", "2", "-c", "8", "-d", f"{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    print(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = stack_data(tmp)
        photos = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(_QuietFiles, directory=tmp)
        )
        threading.Thread(target=photos.serve_forever, daemon=True).start()
        (Path(tmp) / "q.jpg").write_bytes(photo_640x480("obama2.jpg"))
        photo_url = f"http://127.0.0.1:{photos.server_address[1]}/q.jpg"

        base = free_base()
        process, token = start_stack(data, base)
        try:
            enrol_synthetic(base, args.faces)
            api = f"http://127.0.0.1:{base + PORTS['gateway']}"
            with httpx.Client(
                base_url=api, headers={"Authorization": f"Token {token}"}, timeout=60
            ) as client:
                known = photo_640x480("obama.jpg")
                query = photo_640x480("obama2.jpg")
                added = client.post(
                    "/v1/face", files={"photo": ("k.jpg", known)}, data={"meta": "Obama"}
                )
                assert added.status_code == 200, added.text
                # Faces at 640x480 are small: ask with the `low` preset for this check.
                found = client.post(
                    "/v1/identify", files={"photo": ("q.jpg", query)}, data={"threshold": "low"}
                ).json()
                assert found["results"], f"no face found on the query photo: {found}"
                if not next(iter(found["results"].values())):
                    closest = client.post(
                        "/v1/identify",
                        files={"photo": ("q.jpg", query)},
                        data={"threshold": "none", "n": "3"},
                    ).json()
                    raise AssertionError(f"no match above `low`; the closest: {closest}")
                best = next(iter(found["results"].values()))
                assert best and best[0]["face"]["meta"] == "Obama", found
                print(f"faces enrolled: {args.faces + 1:,}; the right face is found first")
                measure(
                    "/v1/identify (640x480 upload)",
                    lambda: client.post("/v1/identify", files={"photo": ("q.jpg", query)}),
                    args.runs,
                )
                measure(
                    "/v1/face (640x480 upload)",
                    lambda: client.post("/v1/face", files={"photo": ("k.jpg", known)}),
                    args.runs,
                )
                pages = iter(range(10**9))
                measure(
                    "/v1/faces (100 per page)",
                    lambda: client.get(
                        "/v1/faces",
                        params={
                            "limit": 100,
                            "max_id": args.faces - 100 * next(pages) % args.faces,
                        },
                    ),
                    args.runs,
                )
            gateway = next(
                p
                for p in psutil.Process(process.pid).children(recursive=True)
                if "facegrid.gateway" in " ".join(p.cmdline())
            )
            if args.seconds <= 0:
                return
            before = gateway.memory_info().rss
            run_wrk(f"{api}/v1/identify", token, photo_url, args.seconds)
            after = gateway.memory_info().rss
            print(
                f"gateway RSS before the load run {before / 2**20:.0f} MiB, after "
                f"{after / 2**20:.0f} MiB"
            )
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            photos.shutdown()


if __name__ == "__main__":
    main()
