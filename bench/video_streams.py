"""How many 720p@25 camera streams one video worker sustains (the GPU figure of the video issue).

Starts `facegrid up` (`--setting FACEGRID_EXTRACTOR_DEVICE=cuda` on a GPU machine), makes a
1280x720 clip from the 1080p pedestrians clip (played forwards and backwards until it lasts
`--seconds`), and for each count in `--streams` registers that many cameras with `file@25:CLIP`
(each plays the clip in real time, 25 frames/s) under one detector name, then runs one worker
for that detector in single-pass mode with frame drops enabled, as a live camera would be.

A count is sustained when the worker kept up with every stream: at most `--max-drop` of the
frames were dropped. Prints, per count: frames/s handled per stream and in all, drops,
detections/s, posts, and the share of worker time per stage.

    FACEGRID_MODEL_CACHE=... python bench/video_streams.py --streams 8 16 32 48 \
        [--detect-every 3] [--scale 0.5] [--setting FACEGRID_EXTRACTOR_DEVICE=cuda]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import httpx
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).parent))
from gateway_latency import add_setting_option, free_base, stack_data, start_stack

from facegrid.stack import PORTS, read_state
from facegrid.video.core.options import parse
from facegrid.video.worker import Worker

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
SOURCE = FACES / "facenet-pytorch" / "examples" / "video.mp4"
FPS = 25


def make_clip(out: Path, seconds: float) -> Path:
    """SOURCE at 1280x720, forwards then backwards (no cut in the motion), for `seconds`."""
    capture = cv2.VideoCapture(str(SOURCE))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_AREA))
    capture.release()
    cycle = frames + frames[-2:0:-1]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (1280, 720))
    for n in range(int(seconds * FPS)):
        writer.write(cycle[n % len(cycle)])
    writer.release()
    return out


def license_cameras(data: Path, cameras: int) -> dict[str, str]:
    """A licence for `cameras` cameras in the stack's license folder (the community limit is 8),
    signed with a vendor key made here; the setting that makes the stack trust that key."""
    keys = data.parent
    cli = [sys.executable, "-m", "facegrid", "license"]
    private, public = keys / "vendor.pem", keys / "vendor.pub"
    subprocess.run([*cli, "keygen", "--private", str(private), "--public", str(public)], check=True)
    (data / "license").mkdir(parents=True, exist_ok=True)
    licence = data / "license" / "bench.lic"
    issue = ["issue", "--key", str(private), "--customer", "bench", "--cameras", str(cameras)]
    subprocess.run([*cli, *issue, "-o", str(licence)], check=True)
    return {"FACEGRID_LICENSING_PUBLIC_KEY": str(public)}


async def run_streams(
    count: int, clip: Path, api: str, token: str, extractor: str, args: argparse.Namespace
) -> bool:
    detector = f"bench-{count}"
    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        for n in range(count):
            response = client.post(
                "/v1/camera",
                json={"url": f"file@{FPS}:{clip}", "detector": detector, "meta": f"stream {n}"},
            )
            response.raise_for_status()
    options = parse(
        [
            "--api-url", api, "--api-token", token, "--extractor", extractor,
            "--detector-name", detector, "--detectors-max", str(count), "--single-pass",
            "--camera-url", "/v1/camera", "-r", "0",
            "--detect-every", str(args.detect_every), "--scale", str(args.scale),
        ]
    )  # fmt: skip
    worker = Worker(options, CollectorRegistry())
    started = time.perf_counter()
    await worker.run(asyncio.Event())
    wall = time.perf_counter() - started
    worker.close()
    pipelines = list(worker.finished.values())
    frames = sum(p.stats.frames_in for p in pipelines)
    dropped = sum(p.stats.dropped for p in pipelines)
    detections = sum(p.stats.processed for p in pipelines)
    posts = sum(p.stats.posts for p in pipelines)
    post_errors = sum(p.stats.post_errors for p in pipelines)
    stages: dict[str, float] = {}
    for p in pipelines:
        for stage, seconds in p.stage_seconds.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    total = sum(stages.values()) or 1.0
    share = ", ".join(f"{k} {v / total:.0%}" for k, v in stages.items())
    handled = frames - dropped
    drop_share = dropped / frames if frames else 1.0
    sustained = len(pipelines) == count and drop_share <= args.max_drop
    print(
        f"{count} streams (detect-every {args.detect_every}, scale {args.scale:g}): "
        f"{handled / wall:.0f} frames/s handled in {wall:.1f} s "
        f"({handled / wall / count:.1f} per stream of {FPS}), {dropped} of {frames} dropped "
        f"({drop_share:.1%}), {detections / wall:.0f} detections/s, {posts} posts "
        f"({post_errors} failed); "
        f"stage time: {share} -> {'SUSTAINED' if sustained else 'not sustained'}",
        flush=True,
    )
    return sustained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the clip")
    parser.add_argument("--detect-every", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--max-drop", type=float, default=0.01, help="dropped share allowed")
    add_setting_option(parser)
    args = parser.parse_args()
    settings = dict(s.split("=", 1) for s in args.setting)
    with tempfile.TemporaryDirectory(prefix="facegrid-streams-") as tmp:
        clip = make_clip(Path(tmp) / "pedestrians-720p.mp4", args.seconds)
        data = stack_data(tmp)
        settings |= license_cameras(data, sum(args.streams))
        base = free_base()
        process, token = start_stack(data, base, settings)
        try:
            api = f"http://127.0.0.1:{base + PORTS['gateway']}"
            # Every extractor process of the stack (FACEGRID_EXTRACTORS), as the gateway has them.
            state = read_state(data)
            assert state is not None
            components: list[dict[str, str]] = state["components"]  # type: ignore[assignment]
            extractors = [c["target"] for c in components if c["name"].startswith("extractor")]
            extractor = ",".join(extractors)
            best = 0
            for count in args.streams:
                if asyncio.run(run_streams(count, clip, api, token, extractor, args)):
                    best = max(best, count)
            print(f"most 720p@{FPS} streams sustained by one worker: {best}")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


if __name__ == "__main__":
    main()
