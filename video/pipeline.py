"""One camera's pipeline: capture -> motion gate, detection and tracking -> posting.

Frames with motion, or with faces being tracked, go to detection: every `detect-every`th of
them, scaled by `scale` (the seed's scale coefficient: faces are found on the scaled frame, so a
scaled face must still pass min-face-size). Boxes and landmarks come back in frame pixels; the
posted photo and the normalized face are made from the full frame.

Each stage is a thread; between them are bounded queues. When processing falls behind, the
capture stage drops the oldest waiting frame (counted) unless `disable-drops`, in which case it
waits. Posting runs apart from processing, so a slow API does not stall detection; its queue is
bounded too (posts are dropped and counted when it is full). `stop()` ends every stage; a file
source ends the pipeline by itself, after the tracks it left open are posted. With a sink (the
camera's output stream), every frame processing takes is offered to it, after detection and
tracking, with the tracks to draw.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import httpx
import numpy as np

from facegrid.video.capture import Capture, Captured, Source
from facegrid.video.clients import Api, Camera, Extractor, ExtractorError
from facegrid.video.core.geometry import Region
from facegrid.video.core.motion import Frame, MotionDetector
from facegrid.video.core.options import Options
from facegrid.video.core.tracking import Detection, Post, Tracker
from facegrid.video.metrics import CameraMetrics
from facegrid.video.queues import put_latest
from facegrid.video.sink import Sink

log = logging.getLogger(__name__)

FRAME_QUEUE = 4
POST_QUEUE = 64
JPEG_QUALITY = 90
_END = None


@dataclass
class _Frame:
    captured: Captured
    # The full frame as JPEG, made once it is needed for a post.
    jpeg: bytes = b""
    # When it left the capture stage (time.monotonic), for the frame-to-post latency.
    captured_at: float = field(default_factory=time.monotonic)


@dataclass
class Stats:
    frames_in: int = 0
    processed: int = 0
    dropped: int = 0
    posts: int = 0
    post_errors: int = 0
    # When the API last accepted a face (time.time()), for the control plane's camera status.
    last_post: float | None = None
    posted: list[dict[str, object]] = field(default_factory=list)


class CameraPipeline:
    def __init__(
        self,
        camera: Camera,
        source: Source,
        options: Options,
        extractor: Extractor,
        api: Api,
        metrics: CameraMetrics,
        *,
        sink: Sink | None = None,
        keep_answers: bool = False,
    ) -> None:
        """sink: the camera's output stream, which gets every frame processing takes (with
        the tracks drawn on it when draw-track is on); the pipeline closes it at its end."""
        self.camera = camera
        self.options = options
        self._source = source
        self._extractor = extractor
        self._api = api
        self._metrics = metrics
        self._sink = sink
        self._keep_answers = keep_answers  # tests and benchmarks read what was posted
        self._stop = threading.Event()
        self._frames: queue.Queue[_Frame | None] = queue.Queue(FRAME_QUEUE)
        self._posts: queue.Queue[Post | None] = queue.Queue(POST_QUEUE)
        self.stats = Stats()
        self.stage_seconds = {"capture": 0.0, "motion": 0.0, "detect": 0.0, "post": 0.0}
        self._started_wall = time.time()
        self._threads = [
            threading.Thread(target=self._capture, name=f"capture-{camera.id}", daemon=True),
            threading.Thread(target=self._process, name=f"process-{camera.id}", daemon=True),
            threading.Thread(target=self._post, name=f"post-{camera.id}", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the stages to end; True when they all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # Stages.

    def _capture(self) -> None:
        capture = Capture(
            self._source, self.options.source_params, self._stop, self._metrics.reconnects.inc
        )
        try:
            started = time.perf_counter()
            for captured in capture.frames():
                self.stage_seconds["capture"] += time.perf_counter() - started
                self.stats.frames_in += 1
                self._metrics.frames_in.inc()
                self._offer(_Frame(captured))
                started = time.perf_counter()
        except OSError as e:
            log.error("camera %s: %s", self.camera.id, e)
        finally:
            self._put(self._frames, _END)

    def _offer(self, frame: _Frame) -> None:
        if self.options.disable_drops:
            self._put(self._frames, frame)
            return
        dropped = put_latest(self._frames, frame)  # the oldest waiting frames give way
        if dropped:
            self.stats.dropped += dropped
            self._metrics.drops.inc(dropped)

    def _put(self, q: queue.Queue[Any], item: object) -> None:
        """Put, waiting for room, unless the pipeline stops (the end marker always goes)."""
        while True:
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._stop.is_set() and item is not _END:
                    return

    def _process(self) -> None:
        o = self.options
        motion = MotionDetector(o.md_threshold, o.scale)
        tracker = Tracker(o)
        rot = self.camera.rot or o.rot
        # Frames since the last detection; the first frame worth detecting is detected.
        since_detection = o.detect_every
        try:
            while True:
                item = self._frames.get()
                if item is _END or item is None:
                    break
                since_detection = self._look(item, motion, tracker, rot, since_detection)
                if self._sink is not None:
                    marks = tracker.marks() if o.draw_track else ()
                    self._sink.offer(item.captured.frame, item.captured.time, marks)
            self._queue_posts(tracker.finish())
        finally:
            self._metrics.tracks.set(0)
            self._put(self._posts, _END)
            if self._sink is not None:
                self._sink.close()

    def _look(
        self,
        item: _Frame,
        motion: MotionDetector,
        tracker: Tracker,
        rot: Region | None,
        since_detection: int,
    ) -> int:
        """Motion gate, detection and tracking of one frame; returns the frames since the last
        detection."""
        o = self.options
        frame = item.captured.frame
        tracker.frame_size = (frame.shape[1], frame.shape[0])
        started = time.perf_counter()
        moving = motion.moved(frame)
        self.stage_seconds["motion"] += time.perf_counter() - started
        since_detection += 1
        if not moving and not tracker.active:
            return since_detection
        if since_detection < o.detect_every:
            return since_detection  # the tracks carry their faces to the next detected frame
        started = time.perf_counter()
        try:
            detections = self._detect(item, rot)
        except ExtractorError as e:
            log.warning("camera %s: %s", self.camera.id, e)
            return 0
        finally:
            self.stage_seconds["detect"] += time.perf_counter() - started
        self.stats.processed += 1
        self._metrics.processed.inc()
        posts = tracker.update(item, item.captured.time, detections)
        self._metrics.tracks.set(tracker.active)
        self._queue_posts(posts)
        return 0

    def _detect(self, item: _Frame, rot: Region | None) -> list[Detection]:
        """Faces on the frame scaled by `scale`, in frame pixels."""
        o = self.options
        frame: Frame = item.captured.frame
        if o.scale != 1.0:
            frame = np.asarray(
                cv2.resize(frame, None, fx=o.scale, fy=o.scale, interpolation=cv2.INTER_AREA)
            )
            rot = None if rot is None else rot.zoomed(o.scale)
        jpeg = _encode(frame)
        if o.scale == 1.0:
            item.jpeg = jpeg  # also the photo to post
        detections = self._extractor.detect(jpeg, rot, o.min_face_size, o.max_face_size)
        if o.scale == 1.0:
            return detections
        return [d.zoomed(1 / o.scale) for d in detections]

    def _queue_posts(self, posts: list[Post]) -> None:
        for post in posts:
            try:
                self._posts.put_nowait(post)
            except queue.Full:
                self.stats.post_errors += 1
                self._metrics.post_errors.inc()

    def _post(self) -> None:
        while True:
            post = self._posts.get()
            if post is None:
                return
            started = time.perf_counter()
            try:
                self._send(post)
            finally:
                self.stage_seconds["post"] += time.perf_counter() - started

    def _send(self, post: Post) -> None:
        o = self.options
        detection = post.detection
        try:
            frame: _Frame = post.frame
            if not frame.jpeg:  # detected on a scaled frame: the photo is the full one
                frame.jpeg = _encode(frame.captured.frame)
            jpeg = frame.jpeg
            face0 = self._extractor.normalized(jpeg, detection)
            timestamp = None
            if o.start_ts:
                when = (
                    post.frame_time if self._source.live else self._started_wall + post.frame_time
                )
                timestamp = dt.datetime.fromtimestamp(when, dt.UTC).replace(tzinfo=None)
            response = self._api.post(
                self.camera.id,
                jpeg,
                face0,
                post.box,
                None if timestamp is None else timestamp.isoformat(timespec="seconds"),
                {"score": detection.score, "direction_score": detection.direction_score},
            )
        except (ExtractorError, httpx.HTTPError) as e:
            log.warning("camera %s: post failed: %r", self.camera.id, e)
            self.stats.post_errors += 1
            self._metrics.post_errors.inc()
            return
        if response.is_success:
            self.stats.posts += 1
            self.stats.last_post = time.time()
            self._metrics.posts.inc()
            self._metrics.latency.observe(time.monotonic() - post.frame.captured_at)
            if self._keep_answers:
                self.stats.posted.append(
                    {
                        "track": post.track,
                        "score": detection.score,
                        "time": post.frame_time,
                        "box": post.box.rounded(),
                        "answer": response.json(),
                    }
                )
        else:
            log.warning(
                "camera %s: the API answered %s: %s",
                self.camera.id,
                response.status_code,
                response.text[:200],
            )
            self.stats.post_errors += 1
            self._metrics.post_errors.inc()


def _encode(frame: Frame) -> bytes:
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ExtractorError(f"cannot encode a {frame.shape} frame as JPEG")
    return encoded.tobytes()
