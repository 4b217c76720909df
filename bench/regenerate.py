"""`facegrid regenerate` speed on the one-machine stack.

Starts `facegrid up`, enrolls N real photos from ../shared/data/faces (repeated as needed),
marks their faces as an older model's, then times `facegrid regenerate --stack` from the stored
normalized faces, and again with `--redetect` (detection on the original photos). Prints faces
per second for each and checks that every face ends with the extractor's model.

With `--total N`, the enrolled faces' documents are then copied in MongoDB (new ids, the same
stored media, the ids counter moved past them) until there are N faces, and only the run from
normalized faces is timed: how regenerate goes over a large collection (100k faces at about 60
faces/s on 2 cores is half an hour; `--redetect` is several times slower).

    python bench/regenerate.py --faces 300 [--total 100000 [--limit 5000]]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from gateway_latency import free_base, stack_data, start_stack
from pymongo import MongoClient

from facegrid.stack import read_state

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
OLD_MODEL = "dlib-resnet-v0@1"


def photos(count: int) -> list[bytes]:
    found = sorted(
        p for p in (PHOTOS / "face_recognition" / "examples").glob("*.jpg") if p.stat().st_size
    )
    return [found[i % len(found)].read_bytes() for i in range(count)]


def regenerate(data: Path, *extra: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "facegrid",
            "regenerate",
            "--stack",
            "--data-dir",
            str(data),
            "-q",
            "--restart",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(done.stderr)
    return time.perf_counter() - started, done.stdout.strip()


def copy_faces(db: Any, total: int) -> int:
    """Copies of the enrolled faces' documents (new ids, same media) until there are `total`."""
    started = time.perf_counter()
    originals = list(db["faces"].find({"state": "active"}))
    next_id = max(int(d["_id"]) for d in originals) + 1
    count = len(originals)
    while count < total:
        batch = []
        for doc in originals[: min(1000, total - count)]:
            batch.append({**doc, "_id": next_id})
            next_id += 1
        db["faces"].insert_many(batch)
        count += len(batch)
    db["counters"].update_one({"_id": "faces"}, {"$set": {"seq": next_id - 1}})
    print(f"copied the faces up to {count} in {time.perf_counter() - started:.0f} s", flush=True)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=300, help="photos enrolled through the API")
    parser.add_argument("--total", type=int, default=0, help="copy the faces up to this many")
    parser.add_argument(
        "--limit", type=int, default=0, help="time regenerate on the first this many faces"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = stack_data(tmp)
        process, token = start_stack(data, free_base())
        try:
            base = next(
                c["target"]
                for c in read_state(data)["components"]  # type: ignore[index, union-attr]
                if c["name"] == "gateway"
            )
            client = httpx.Client(
                base_url=f"http://{base}/v1", headers={"Authorization": f"Token {token}"}
            )

            def enroll(photo: bytes) -> int:
                answer = client.post("/face", files={"photo": photo}, data={"mf_selector": "all"})
                return len(answer.json().get("results", [])) if answer.is_success else 0

            started = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                faces = sum(pool.map(enroll, photos(args.faces)))
            print(
                f"{faces} faces from {args.faces} photos in {time.perf_counter() - started:.0f} s"
            )

            state = read_state(data)
            assert state is not None
            mongo: MongoClient[dict[str, object]] = MongoClient(str(state["mongo_uri"]))
            db = mongo[str(state["mongo_db"])]
            collection = db["faces"]
            runs: list[tuple[str, tuple[str, ...]]] = [("from normalized faces", ())]
            if args.total > faces:
                faces = copy_faces(db, args.total)
            else:
                runs.append(("--redetect", ("--redetect",)))
            for label, extra in runs:
                collection.update_many({}, {"$set": {"model": OLD_MODEL}})
                limit = ("--limit", str(args.limit)) if args.limit else ()
                seconds, summary = regenerate(data, *extra, *limit)
                left = collection.count_documents({"model": OLD_MODEL, "state": "active"})
                done = min(args.limit, faces) if args.limit else faces
                print(
                    f"regenerate {label}: {done / seconds:.1f} faces/s ({done} of {faces} faces "
                    f"in {seconds:.1f} s, process start included); faces left on the old "
                    f"model: {left}"
                )
                print(f"  {summary.splitlines()[0]}")
            mongo.close()
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)


if __name__ == "__main__":
    main()
