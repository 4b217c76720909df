"""The video worker on real clips, with the real extractor, posting to a running `facegrid up`.

Clips come from shared/data/faces; shorter cuts of them (and a clip made of the office frames,
which have no faces) are written to the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import grpc
import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from facegrid.stack import PORTS
from facegrid.v1 import extractor_pb2 as pb
from facegrid.v1 import extractor_pb2_grpc
from facegrid.video.core.options import parse
from facegrid.video.worker import Worker
from tests.conftest import FACES
from tests.video.recorder import recording

from .conftest import RunningStack, stack_with_models

HAMILTON = FACES / "face_recognition" / "examples" / "short_hamilton_clip.mp4"
OFFICE = FACES / "dlib" / "examples" / "video_frames"
CAMERA = "0c1a8d52-5f0e-4b8e-9d1b-00000000beef"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, model_bundle: Path
) -> Iterator[tuple[RunningStack, int]]:
    with stack_with_models(tmp_path_factory.mktemp("video"), model_bundle) as running:
        yield running


def _cut(source: Path, frames: int, out: Path) -> Path:
    """The first frames of a clip, as a new file."""
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25
    writer: cv2.VideoWriter | None = None
    for _ in range(frames):
        ok, frame = capture.read()
        if not ok:
            break
        if writer is None:
            height, width = frame.shape[:2]
            writer = cv2.VideoWriter(
                str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
            )
        writer.write(frame)
    capture.release()
    assert writer is not None
    writer.release()
    return out


async def _run(stack: tuple[RunningStack, int], *flags: str) -> Worker:
    running, base = stack
    options = parse(
        [
            "--api-url", running.api,
            "--api-token", running.token,
            "--extractor", f"127.0.0.1:{base + PORTS['extractor']}",
            "--camid", CAMERA,
            "--disable-drops",
            *flags,
        ]
    )  # fmt: skip
    worker = Worker(options, CollectorRegistry(), keep_answers=True)
    try:
        await worker.run(asyncio.Event())
    finally:
        worker.close()
    return worker


def _posted(worker: Worker) -> list[dict[str, Any]]:
    (pipeline,) = worker.finished.values()
    assert pipeline.stats.post_errors == 0
    return pipeline.stats.posted


async def test_offline_mode_posts_one_face_per_track(stack: tuple[RunningStack, int]) -> None:
    worker = await _run(stack, "--source", str(HAMILTON), "-r", "0", "--min-face-size", "40")
    (pipeline,) = worker.finished.values()
    assert pipeline.stats.frames_in == pipeline.stats.processed == 275
    posted = _posted(worker)
    assert posted, "no face posted from the clip"
    tracks = [p["track"] for p in posted]
    assert len(tracks) == len(set(tracks))  # one post per track
    for post in posted:
        (face,) = post["answer"]["results"]
        assert face["cam_id"] == CAMERA
        assert face["photo"] and face["normalized"]


async def test_realtime_mode_posts_faces_of_rising_quality(
    stack: tuple[RunningStack, int], tmp_path: Path
) -> None:
    clip = _cut(HAMILTON, 90, tmp_path / "cut.mp4")
    worker = await _run(
        stack, "--source", str(clip), "-r", "1", "--rt-score-step", "0.2", "--min-score", "-10"
    )
    by_track: dict[int, list[float]] = {}
    for post in _posted(worker):
        by_track.setdefault(post["track"], []).append(post["score"])
    assert any(len(scores) > 1 for scores in by_track.values()), by_track
    for scores in by_track.values():
        for before, after in itertools.pairwise(scores):
            assert after >= before + 0.2 - 1e-6


async def test_post_uniq_caps_repeated_posts_of_one_person(
    stack: tuple[RunningStack, int], tmp_path: Path
) -> None:
    clip = _cut(HAMILTON, 90, tmp_path / "cut.mp4")
    flags = ["--source", str(clip), "-r", "1", "--rt-score-step", "0.01", "--min-score", "-10"]
    unlimited = _posted(await _run(stack, *flags))
    uniq = ["--post-uniq", "1", "--uc-max-dup", "2", "--uc-max-time-diff", "2"]
    capped = _posted(await _run(stack, *flags, *uniq, "--uc-max-avg-shift", "60"))
    assert len(capped) < len(unlimited)
    for i, post in enumerate(capped):
        x1, y1, x2, y2 = post["box"]
        near = [
            p
            for p in capped[:i]
            if post["time"] - p["time"] <= 2
            and math.dist(((x1 + x2) / 2, (y1 + y2) / 2), _centre(p["box"])) <= 60
        ]
        assert len(near) < 2


async def test_detect_every_and_scale_post_full_frames_in_frame_pixels(
    stack: tuple[RunningStack, int], tmp_path: Path
) -> None:
    """Detection on every third frame, on frames scaled by half: the tracks still make one post
    each, the boxes come back in the frame's pixels, and the posted photo is the full frame.
    (Faces under the minimum size once halved are not found, as the seed's `scale` says, so
    there may be fewer tracks than at full size.)"""
    clip = _cut(HAMILTON, 90, tmp_path / "cut.mp4")
    flags = ["--source", str(clip), "-r", "0", "--min-face-size", "40"]
    full = _posted(await _run(stack, *flags))
    worker = await _run(stack, *flags, "--detect-every", "3", "--scale", "0.5")
    (pipeline,) = worker.finished.values()
    assert pipeline.stats.frames_in == 90
    assert pipeline.stats.processed == 30
    posted = _posted(worker)
    assert len(posted) == len({p["track"] for p in posted})
    assert 1 <= len(posted) <= len(full)
    _, base = stack
    async with httpx.AsyncClient(timeout=30) as client:
        photos = [(await client.get(p["answer"]["results"][0]["photo"])).content for p in posted]
    with grpc.insecure_channel(f"127.0.0.1:{base + PORTS['extractor']}") as channel:
        detect = extractor_pb2_grpc.ExtractorStub(channel).Detect
        for post, photo in zip(posted, photos, strict=True):
            image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
            assert image.shape == (360, 640, 3)
            # The posted box is where a detection on the full photo puts the face.
            (result,) = detect(pb.DetectRequest(images=[pb.Image(data=photo)]), timeout=30).results
            boxes = [(f.bbox.x1, f.bbox.y1, f.bbox.x2, f.bbox.y2) for f in result.faces]
            assert max(_iou(post["box"], box) for box in boxes) > 0.7, (post["box"], boxes)


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (area - w * h)


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    x1, y1, x2, y2 = box
    return (x1 + x2) / 2, (y1 + y2) / 2


async def test_no_posts_from_frames_without_faces(
    stack: tuple[RunningStack, int], tmp_path: Path
) -> None:
    clip = tmp_path / "office.mp4"
    frames = sorted(OFFICE.glob("*.jpg"))
    first = cv2.imread(str(frames[0]))
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
    for path in frames:
        writer.write(cv2.imread(str(path)))
    writer.release()
    worker = await _run(stack, "--source", str(clip), "--md-threshold", "0", "-r", "1")
    (pipeline,) = worker.finished.values()
    assert pipeline.stats.processed == len(frames)
    assert pipeline.stats.posts == 0


async def test_posts_have_the_fields_of_the_reference_example(
    stack: tuple[RunningStack, int], tmp_path: Path
) -> None:
    """As "Render Detection Results" shows fkvideo_detector's request: the frame as `photo`,
    `face0`, `bbox`, `cam_id`, `timestamp`, `detectorParams`, plus body fields and headers."""
    _, base = stack
    clip = _cut(HAMILTON, 30, tmp_path / "cut.mp4")
    with recording() as api:
        options = parse(
            [
                "--api-url", api.url,
                "--api-token", "secret",
                "--extractor", f"127.0.0.1:{base + PORTS['extractor']}",
                "--camid", CAMERA,
                "--source", str(clip),
                "-r", "0",
                "--disable-drops",
                "--request-url", "/v1/face",
                "--body", "gender=true,meta=video.mp4",
                "--headers", "X-Origin=door",
                "--bbox-scale", "1.3",
            ]
        )  # fmt: skip
        worker = Worker(options, CollectorRegistry())
        await worker.run(asyncio.Event())
        worker.close()
        requests = list(api.requests)
    assert requests
    headers, body = requests[0]
    assert headers["Authorization"] == "Token secret"
    assert headers["X-Origin"] == "door"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body
    )
    parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
    assert set(parts) == {
        "photo", "face0", "bbox", "cam_id", "timestamp", "detectorParams", "gender", "meta",
    }  # fmt: skip
    assert parts["photo"].get_payload(decode=True)[:3] == b"\xff\xd8\xff"  # JPEG
    assert parts["face0"].get_payload(decode=True)[:8] == b"\x89PNG\r\n\x1a\n"
    (box,) = json.loads(parts["bbox"].get_content())
    assert len(box) == 4 and box[2] > box[0] and box[3] > box[1]
    assert parts["cam_id"].get_content() == CAMERA
    assert parts["timestamp"].get_content().count(":") == 2
    params = json.loads(parts["detectorParams"].get_content())
    assert set(params) == {"score", "direction_score"}
    assert parts["meta"].get_content() == "video.mp4"
