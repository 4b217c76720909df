"""`facegrid regenerate` speed on the one-machine stack.

Starts `facegrid up`, enrolls N real photos from ../shared/data/faces (repeated as needed),
marks their faces as an older model's, then times `facegrid regenerate --stack` from the stored
normalized faces, and again with `--redetect` (detection on the original photos). Prints faces
per second for each and checks that every face ends with the extractor's model.

    python bench/regenerate.py --faces 300
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=300)
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
            collection = mongo[str(state["mongo_db"])]["faces"]
            for label, extra in (("from normalized faces", ()), ("--redetect", ("--redetect",))):
                collection.update_many({}, {"$set": {"model": OLD_MODEL}})
                seconds, summary = regenerate(data, *extra)
                left = collection.count_documents({"model": OLD_MODEL, "state": "active"})
                print(
                    f"regenerate {label}: {faces / seconds:.1f} faces/s ({seconds:.1f} s, "
                    f"process start included); faces left on the old model: {left}"
                )
                print(f"  {summary.splitlines()[0]}")
            mongo.close()
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)


if __name__ == "__main__":
    main()
