"""Video worker throughput on the real clips, posting to `facegrid up`.

For each clip (the 640x360 Hamilton clip and the 1080p pedestrians clip) and each setting of
`detect-every` and `scale` asked for, in offline mode with drops disabled (every frame goes
through the motion gate; every Nth frame with motion, or with faces being tracked, through
detection, scaled by `scale`):
- frames/s processed (frames handled / wall time), and detections/s;
- the share of time per stage (capture, motion gate, detection incl. JPEG encode and the
  extractor call, posting incl. the normalized face);
- track fragmentation: posts per distinct person, the posted faces grouped by our own face
  vectors (average linkage, mean distance < 0.5).

    FACEGRID_MODEL_CACHE=... python bench/video_throughput.py [--frames N]
        [--detect-every 1 3] [--scale 1 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

import cv2
import grpc
import httpx
import numpy as np
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).parent))
from gateway_latency import free_base, stack_data, start_stack

from facegrid.stack import PORTS
from facegrid.v1 import extractor_pb2 as pb
from facegrid.v1 import extractor_pb2_grpc
from facegrid.video.core.options import parse
from facegrid.video.worker import Worker

FACES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "faces"
CLIPS = {
    "640x360 Hamilton": FACES / "face_recognition" / "examples" / "short_hamilton_clip.mp4",
    "1920x1080 pedestrians": FACES / "facenet-pytorch" / "examples" / "video.mp4",
}
SAME_PERSON = 0.5


def cut(source: Path, frames: int, out: Path) -> Path:
    if frames <= 0:
        return source
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25
    writer = None
    for _ in range(frames):
        ok, frame = capture.read()
        if not ok:
            break
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        writer.write(frame)
    capture.release()
    assert writer is not None
    writer.release()
    return out


def persons(vectors: list[np.ndarray]) -> int:
    """Clusters of faces by average linkage: two clusters merge while their mean distance is
    under SAME_PERSON (single linkage at dlib's 0.6 chains different people together)."""
    clusters = [[v] for v in vectors]
    while len(clusters) > 1:
        best, pair = SAME_PERSON, None
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                mean = float(
                    np.mean([np.linalg.norm(a - b) for a in clusters[i] for b in clusters[j]])
                )
                if mean < best:
                    best, pair = mean, (i, j)
        if pair is None:
            break
        i, j = pair
        clusters[i] += clusters.pop(j)
    return len(clusters)


def vectors_of(posted: list[dict[str, object]], extractor: str) -> list[np.ndarray]:
    chips = []
    with httpx.Client(timeout=30) as client:
        for post in posted:
            answer = post["answer"]
            assert isinstance(answer, dict)
            for face in answer["results"]:
                chips.append(client.get(face["normalized"]).content)
    with grpc.insecure_channel(extractor) as channel:
        stub = extractor_pb2_grpc.ExtractorStub(channel)
        response = stub.Extract(
            pb.ExtractRequest(
                items=[pb.ExtractItem(image=pb.Image(data=c), prenormalized=True) for c in chips],
                facen=True,
            ),
            timeout=120,
        )
    return [np.frombuffer(r.facen, dtype="<f4") for r in response.results]


async def run_clip(
    label: str, clip: Path, api: str, token: str, extractor: str, every: int, scale: float
) -> None:
    options = parse(
        [
            "--api-url", api, "--api-token", token, "--extractor", extractor,
            "--camid", "bench", "--source", str(clip), "-r", "0", "--disable-drops",
            "--detect-every", str(every), "--scale", str(scale),
        ]
    )  # fmt: skip
    label = f"{label}, detect-every {every}, scale {scale:g}"
    worker = Worker(options, CollectorRegistry(), keep_answers=True)
    started = time.perf_counter()
    await worker.run(asyncio.Event())
    wall = time.perf_counter() - started
    worker.close()
    (pipeline,) = worker.finished.values()
    stats = pipeline.stats
    stages = pipeline.stage_seconds
    total = sum(stages.values()) or 1.0
    shares = ", ".join(f"{k} {v / total:.0%}" for k, v in stages.items())
    print(
        f"{label}: {stats.frames_in} frames in {wall:.1f} s = {stats.frames_in / wall:.1f} "
        f"frames/s ({stats.processed / wall:.1f} detections/s); stage time: {shares}; "
        f"{stats.dropped} dropped"
    )
    vectors = vectors_of(stats.posted, extractor)
    people = persons(vectors)
    ratio = len(vectors) / people if people else float("nan")
    print(
        f"  offline posts {len(vectors)}, distinct persons {people}: "
        f"{ratio:.2f} posts per person [target <= 1.2]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=0, help="only the first N frames")
    parser.add_argument("--detect-every", type=int, nargs="+", default=[1])
    parser.add_argument("--scale", type=float, nargs="+", default=[1.0])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = stack_data(tmp)
        base = free_base()
        process, token = start_stack(data, base)
        try:
            api = f"http://127.0.0.1:{base + PORTS['gateway']}"
            extractor = f"127.0.0.1:{base + PORTS['extractor']}"
            for label, clip in CLIPS.items():
                source = cut(clip, args.frames, Path(tmp) / f"{clip.stem}-cut.mp4")
                for every in args.detect_every:
                    for scale in args.scale:
                        asyncio.run(run_clip(label, source, api, token, extractor, every, scale))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


if __name__ == "__main__":
    main()
