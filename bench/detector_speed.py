"""Face detection time per video frame, in process: the MTCNN cascade on the frames of the
640x360 Hamilton clip and the 1080p pedestrians clip (minimum face 50 px, the default).

    FACEGRID_MODEL_CACHE=... python bench/detector_speed.py [--frames 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2

from facegrid.extractor.bundle import build
from facegrid.extractor.core.engine import Engine

FACES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "faces"
CLIPS = {
    "640x360": FACES / "face_recognition" / "examples" / "short_hamilton_clip.mp4",
    "1920x1080": FACES / "facenet-pytorch" / "examples" / "video.mp4",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build(Path(tmp), progress=lambda _line: None).path
        detector = Engine(bundle, ["CPUExecutionProvider"], 0).detector
        for label, clip in CLIPS.items():
            capture = cv2.VideoCapture(str(clip))
            frames = []
            for _ in range(args.frames):
                ok, frame = capture.read()
                if not ok:
                    break
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            capture.release()
            detector.detect(frames[0])  # warm up
            per_run = []
            for _ in range(args.runs):
                started = time.perf_counter()
                faces = sum(len(detector.detect(f)) for f in frames)
                per_run.append((time.perf_counter() - started) / len(frames))
            best = min(per_run)
            print(
                f"{label}: {best * 1000:.1f} ms per frame (best of {args.runs} runs; median "
                f"{statistics.median(per_run) * 1000:.1f} ms), {1 / best:.1f} frames/s, "
                f"{faces / len(frames):.1f} faces per frame"
            )


if __name__ == "__main__":
    main()
