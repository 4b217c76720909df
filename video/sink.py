"""A camera's output video stream: `sink-url`, `sink-res` and `draw-track`.

The seed sends one camera's video on to a video server (nginx, which the web UI plays it from)
while it detects. FaceGrid encodes the frames it reads as H.264 with PyAV (FFmpeg's libx264:
ultrafast, zero latency) and sends them, with the frame times of the source, to:
- `host:port` (the seed's form): RTMP, to `rtmp://host:port/live/<camera id>`, the stream key
  an nginx-rtmp `live` application publishes under;
- `rtmp://...`, `rtmps://...` (FLV), `rtsp://...` (RTSP publishing, e.g. to MediaMTX),
  `udp://`, `tcp://`, `srt://` (MPEG-TS): the URL as given;
- anything else: a file, its container from its extension (a recording).

`sink-res` WxH scales the output (default: the camera's size). With `draw-track`, each tracked
face's box, its track id and the path of its centre are drawn on the output frames.

Encoding and sending run on a thread of their own behind a small queue: the camera's pipeline
never waits for the sink. When the queue is full, or the server cannot be reached, frames are
dropped (counted); a failed connection is opened again with backoff, from the next frame on.
PyAV is an optional dependency (`pip install 'facegrid[sink]'`): its wheels bundle FFmpeg with
libx264, which is GPL.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from facegrid.video.core.tracking import TrackMark

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]
SINK_QUEUE = 8
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# Milliseconds: the frame times of the source, as FLV and RTMP carry them.
TIME_BASE = Fraction(1, 1000)
# Colours (BGR) of the drawn tracks, picked by track id.
COLOURS = ((80, 220, 80), (60, 170, 255), (255, 140, 60), (200, 80, 220), (60, 220, 220))
_HOST_PORT = re.compile(r"^[\w.-]+:\d+$")
_FORMATS = {
    "rtmp": "flv",
    "rtmps": "flv",
    "rtsp": "rtsp",
    "udp": "mpegts",
    "tcp": "mpegts",
    "srt": "mpegts",
}


class SinkUnavailable(RuntimeError):
    """PyAV is not installed."""


@dataclass(frozen=True)
class Target:
    url: str
    format: str | None  # None: FFmpeg picks the container from the file's extension


def target(sink_url: str, camera_id: str) -> Target:
    """Where and in which container `sink-url` sends a camera's stream."""
    url = sink_url.strip()
    if _HOST_PORT.match(url):
        return Target(f"rtmp://{url}/live/{camera_id or 'camera'}", "flv")
    scheme, sep, _ = url.partition("://")
    if sep:
        return Target(url, _FORMATS.get(scheme.lower()))
    return Target(url, None)


def load_av() -> Any:
    """The PyAV module, or SinkUnavailable saying how to install it."""
    try:
        return importlib.import_module("av")
    except ImportError:
        raise SinkUnavailable(
            "sink-url needs PyAV, which is not installed: pip install 'facegrid[sink]'"
        ) from None


def draw(frame: Frame, marks: Sequence[TrackMark], scale: tuple[float, float]) -> None:
    """Each track's box, id and path on frame (in place); scale: frame pixels per camera pixel."""
    sx, sy = scale
    thickness = max(1, round(min(frame.shape[:2]) / 360))
    for mark in marks:
        colour = COLOURS[mark.id % len(COLOURS)]
        b = mark.box
        top_left = (round(b.x1 * sx), round(b.y1 * sy))
        cv2.rectangle(frame, top_left, (round(b.x2 * sx), round(b.y2 * sy)), colour, thickness)
        label_at = (top_left[0], max(top_left[1] - 4 * thickness, 10))
        cv2.putText(
            frame, str(mark.id), label_at, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, colour,
            thickness, cv2.LINE_AA,
        )  # fmt: skip
        if len(mark.path) > 1:
            points = np.array([(x * sx, y * sy) for x, y in mark.path], np.float32)
            cv2.polylines(frame, [points.round().astype(np.int32)], False, colour, thickness)


class Sink:
    """One camera's output stream; offer() frames from the pipeline, close() at its end."""

    def __init__(
        self,
        where: Target,
        size: tuple[int, int] | None,
        *,
        on_frame: Callable[[], None] = lambda: None,
        on_drop: Callable[[], None] = lambda: None,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.target = where
        self._av = load_av()
        self._size = size
        self._on_frame, self._on_drop, self._on_error = on_frame, on_drop, on_error
        self._queue: queue.Queue[tuple[Frame, float, tuple[TrackMark, ...]] | None]
        self._queue = queue.Queue(SINK_QUEUE)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sink", daemon=True)
        self.sent = 0
        self.dropped = 0
        self._thread.start()

    def offer(self, frame: Frame, at: float, marks: Sequence[TrackMark] = ()) -> None:
        """Queue a frame (BGR, its time in seconds) for the stream; never waits."""
        item = (frame, at, tuple(marks))
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()  # the oldest waiting frame gives way
                    self._dropped()
                except queue.Empty:
                    pass

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, end the stream and stop the thread."""
        self._closing.set()
        while True:
            try:
                self._queue.put(None, timeout=0.2)
                break
            except queue.Full:
                if not self._thread.is_alive():
                    break
        self._thread.join(timeout)

    def _dropped(self) -> None:
        self.dropped += 1
        self._on_drop()

    def _run(self) -> None:
        output: _Output | None = None
        retry_at = 0.0
        backoff = FIRST_BACKOFF
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                frame, at, marks = item
                if output is None:
                    if time.monotonic() < retry_at:
                        self._dropped()
                        continue
                    try:
                        output = _Output(
                            self._av, self.target, _even(self._size or frame_size(frame))
                        )
                    except (self._av.FFmpegError, OSError) as e:
                        log.warning("sink %s: cannot open: %s", self.target.url, e)
                        self._on_error()
                        self._dropped()
                        retry_at = time.monotonic() + backoff
                        backoff = min(backoff * 2, MAX_BACKOFF)
                        continue
                try:
                    output.send(frame, at, marks)
                except (self._av.FFmpegError, OSError) as e:
                    log.warning("sink %s: sending failed: %s", self.target.url, e)
                    self._on_error()
                    self._dropped()
                    output.abandon()
                    output = None
                    retry_at = time.monotonic() + backoff
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                backoff = FIRST_BACKOFF
                self.sent += 1
                self._on_frame()
        finally:
            if output is not None:
                try:
                    output.finish()
                except (self._av.FFmpegError, OSError) as e:
                    log.warning("sink %s: ending the stream failed: %s", self.target.url, e)


class _Output:
    """An open output container with one H.264 stream."""

    def __init__(self, av: Any, where: Target, size: tuple[int, int]) -> None:
        self._av = av
        self._container = av.open(where.url, mode="w", format=where.format)
        try:
            stream = self._container.add_stream(
                "libx264", rate=25, options={"preset": "ultrafast", "tune": "zerolatency"}
            )
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = TIME_BASE
        except BaseException:
            self._container.close()
            raise
        self._stream = stream
        self._size = size
        self._first: float | None = None
        self._last_pts = -1

    def send(self, frame: Frame, at: float, marks: tuple[TrackMark, ...]) -> None:
        width, height = self._size
        camera_height, camera_width = frame.shape[:2]
        if (camera_width, camera_height) != (width, height):
            frame = np.asarray(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA))
        elif marks:
            frame = frame.copy()  # the pipeline may still read the camera's frame
        if marks:
            draw(frame, marks, (width / camera_width, height / camera_height))
        if self._first is None:
            self._first = at
        # Times in milliseconds from the first frame, always increasing.
        pts = max(round((at - self._first) * 1000), self._last_pts + 1)
        self._last_pts = pts
        video = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
        video.pts = pts
        video.time_base = TIME_BASE
        for packet in self._stream.encode(video):
            self._container.mux(packet)

    def finish(self) -> None:
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()

    def abandon(self) -> None:
        with contextlib.suppress(self._av.FFmpegError, OSError):
            self._container.close()


def frame_size(frame: Frame) -> tuple[int, int]:
    height, width = frame.shape[:2]
    return width, height


def _even(size: tuple[int, int]) -> tuple[int, int]:
    """Sides rounded down to even numbers (H.264 in 4:2:0 needs them)."""
    width, height = size
    return max(2, width - width % 2), max(2, height - height % 2)
