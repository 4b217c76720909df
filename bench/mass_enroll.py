"""`facegrid mass-enroll` against the one-machine stack: images/s, and exactly-once under kill -9.

Starts `facegrid up` in a temporary folder, makes `--images` files by repeating single-face
photos from shared/data/faces (face-api.js's cast chips and face_recognition's knn photos), each
copy with a few unique bytes after the image data so that every file is a distinct photo to the
server (no stored-photo deduplication), and then:
1. prepares a job with `--meta-filename` and runs it with `--parallel` uploads: images/s from the
   run's own summary, for each `--parallel` value given;
2. prepares a second job of `--kill-images` copies in a gallery of its own, kills its run with
   SIGKILL at random points `--kills` times, resumes it, and checks through the REST API that
   every image was enrolled exactly once (each face claimed by one image of the job, and one
   face per image).

    FACEGRID_MODEL_CACHE=... python bench/mass_enroll.py [--images 2000] [--parallel 10 16]
        [--setting FACEGRID_EXTRACTOR_THREADS=1 ...]

The target on a 2-core machine is >= 25 images/s (findface-mass-enroll's example: 2.14).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from gateway_latency import add_setting_option, free_base, stack_data, start_stack

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
SOURCES = [
    *sorted((FACES / "face-api.js" / "examples" / "images").glob("*/*.png")),
    *sorted((FACES / "face_recognition" / "examples" / "knn_examples").glob("*/*/*.jpg")),
]


def make_photos(folder: Path, count: int, offset: int = 0) -> None:
    folder.mkdir(parents=True)
    for n in range(count):
        source = SOURCES[n % len(SOURCES)]
        # Bytes after the image's end marker: decoders ignore them, the MD5 changes.
        data = source.read_bytes() + f"facegrid-bench-{offset + n}".encode()
        (folder / f"{source.stem}-{offset + n:06d}{source.suffix}").write_bytes(data)


def mass_enroll(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facegrid.bulk", *args], capture_output=True, text=True
    )


def run_args(job: Path, api: str, token: str, gallery: str, parallel: int) -> list[str]:
    return [
        "--job", str(job), "run", "--api", api, "--token", token, "--gallery", gallery,
        "--parallel", str(parallel), "--stats-interval", "5",
    ]  # fmt: skip


def gallery_faces(client: httpx.Client, gallery: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    params: dict[str, object] = {"limit": 1000}
    while True:
        page = client.get(f"/v1/faces/gallery/{gallery}", params=params).json()["results"]
        found += page
        if len(page) < 1000:
            return found
        params["max_id"] = page[-1]["id"]


def cpu_seconds(stack: int) -> dict[str, float]:
    """CPU seconds so far of each process of the stack (`facegrid up` and its children), by
    its role: a steadier measure than images/s on a shared machine."""
    found: dict[str, float] = collections.defaultdict(float)
    for child in psutil.Process(stack).children(recursive=True):
        try:
            times = child.cpu_times()
            command = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        role = next((r for r in ROLES if r in command), "other")
        found[role] += times.user + times.system
    return found


# Parts of the stack's command lines that say which service a process is.
ROLES = ("extractor", "gateway", "indexer", "secantus", "redis", "licensing", "operator")


def throughput(
    tmp: Path, api: str, token: str, client: httpx.Client, args: argparse.Namespace, stack: int
) -> None:
    for parallel in args.parallel:
        gallery = f"speed{parallel}"
        client.post(f"/v1/galleries/{gallery}")
        folder = tmp / gallery
        make_photos(folder, args.images, offset=parallel * 1_000_000)
        job = tmp / f"{gallery}.job"
        mass_enroll("--job", str(job), "prepare", "--meta-filename", f"{folder}/*")
        started = time.perf_counter()
        before = cpu_seconds(stack)
        client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = mass_enroll(*run_args(job, api, token, gallery, parallel))
        seconds = time.perf_counter() - started
        after = cpu_seconds(stack)
        client = resource.getrusage(resource.RUSAGE_CHILDREN)
        after["mass-enroll (client)"] = (
            client.ru_utime + client.ru_stime - client_before.ru_utime - client_before.ru_stime
        )
        summary = "\n".join(done.stdout.splitlines()[-7:])
        ok = int(re.search(r"Successfully processed (\d+)", done.stdout)[1])  # type: ignore[index]
        failed = int(re.search(r"Failed to process (\d+)", done.stdout)[1])  # type: ignore[index]
        print(
            f"--parallel {parallel}: {args.images} images in {seconds:.1f} s (the whole command) "
            f"= {args.images / seconds:.1f} images/s; {ok} enrolled, {failed} failed "
            "[target >= 25 images/s]"
        )
        print("  " + summary.replace("\n", "\n  "), flush=True)
        per_image = {r: 1000 * (after[r] - before.get(r, 0.0)) / args.images for r in after}
        print(
            "  CPU per image: "
            + ", ".join(f"{r} {ms:.1f} ms" for r, ms in sorted(per_image.items()) if ms >= 0.05),
            flush=True,
        )


def kill_check(
    tmp: Path, api: str, token: str, client: httpx.Client, args: argparse.Namespace
) -> bool:
    gallery = "killcheck"
    client.post(f"/v1/galleries/{gallery}")
    folder = tmp / gallery
    make_photos(folder, args.kill_images, offset=9_000_000)
    job = tmp / "killcheck.job"
    mass_enroll("--job", str(job), "prepare", "--meta-filename", f"{folder}/*")
    rng = random.Random(args.seed)
    for k in range(args.kills):
        process = subprocess.Popen(
            [sys.executable, "-m", "facegrid.bulk", *run_args(job, api, token, gallery, 10)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        delay = rng.uniform(1.0, 6.0)
        time.sleep(delay)
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
        process.wait()
        print(f"  run {k + 1}: {'killed -9' if killed else 'finished'} after {delay:.1f} s")
    final = mass_enroll(*run_args(job, api, token, gallery, 10))
    images = json.loads(mass_enroll("--job", str(job), "print").stdout)
    faces = gallery_faces(client, gallery)
    claimed = collections.Counter(i for image in images for i in image.get("faces", []))
    per_meta = collections.Counter(str(f["meta"]) for f in faces)
    done = [i for i in images if i["state"] == "done"]
    exact = (
        set(claimed) == {f["id"] for f in faces}
        and all(n == 1 for n in claimed.values())
        and all(per_meta[i["meta"]] == len(i["faces"]) for i in done)
        and len(faces) == sum(len(i["faces"]) for i in done)
    )
    states = collections.Counter(i["state"] for i in images)
    print(
        f"kill -9 check: {len(images)} images, {args.kills} interrupted runs then a resume: "
        f"states {dict(states)}, {len(faces)} faces in the gallery; "
        f"every image enrolled exactly once: {'YES' if exact else 'NO'} (exit {final.returncode})"
    )
    return exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--parallel", type=int, nargs="+", default=[10])
    parser.add_argument("--kill-images", type=int, default=300)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--seed", type=int, default=9)
    add_setting_option(parser)
    args = parser.parse_args()
    settings = dict(s.split("=", 1) for s in args.setting)
    with tempfile.TemporaryDirectory(prefix="facegrid-massenroll-") as tmp_name:
        tmp = Path(tmp_name)
        data = stack_data(tmp_name)
        base = free_base()
        process, token = start_stack(data, base, settings)
        api = f"http://127.0.0.1:{base}"
        try:
            print(f"{len(SOURCES)} source photos, repeated; stack at {api}", flush=True)
            with httpx.Client(base_url=api, headers={"Authorization": f"Token {token}"}) as client:
                throughput(tmp, api, token, client, args, process.pid)
                exact = kill_check(tmp, api, token, client, args)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    sys.exit(0 if exact else 1)


if __name__ == "__main__":
    main()
