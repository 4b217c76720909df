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

Scaling and drawing run on a thread of their own behind a small queue, and FFmpeg in a child
process (see Sink): the camera's pipeline never waits for the sink. When the queue is full, or
the server cannot be reached or stops answering, frames are dropped (counted); a failed
connection is opened again with backoff, from the next frame on.
PyAV is an optional dependency (`pip install 'facegrid[sink]'`): its wheels bundle FFmpeg with
libx264, which is GPL. The encoder process is spawned, so a program that runs a Worker itself
guards its entry point with `if __name__ == "__main__":`, as multiprocessing asks (the
`facegrid-video` command and `python -m facegrid.video` do).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from facegrid.video.core.tracking import TrackMark
from facegrid.video.queues import put_latest

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]
SINK_QUEUE = 8
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# Seconds a frame may go unacknowledged before the encoder process is taken for stuck.
STALL_SECONDS = 10.0
_END_OF_STREAM = b""
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


class EncoderFailed(RuntimeError):
    """The encoder process could not take a frame."""


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
    """One camera's output stream; offer() frames from the pipeline, close() at its end.

    FFmpeg runs in a child process (_encode), fed frame by frame through a pipe, each frame
    acknowledged once muxed. PyAV holds the GIL while FFmpeg connects and writes, so a server
    that stops answering would freeze a whole worker if FFmpeg ran in it; in a child it costs
    that child, which is killed when a frame goes unacknowledged for STALL_SECONDS.
    """

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
        load_av()  # refused here, in the caller, when PyAV is missing
        self._size = size
        self._on_frame, self._on_drop, self._on_error = on_frame, on_drop, on_error
        self._queue: queue.Queue[tuple[Frame, float, tuple[TrackMark, ...]] | None]
        self._queue = queue.Queue(SINK_QUEUE)
        self._thread = threading.Thread(target=self._run, name="sink", daemon=True)
        self.sent = 0
        self.dropped = 0
        self._thread.start()

    def offer(self, frame: Frame, at: float, marks: Sequence[TrackMark] = ()) -> None:
        """Queue a frame (BGR, its time in seconds) for the stream; never waits."""
        for _ in range(put_latest(self._queue, (frame, at, tuple(marks)))):
            self._dropped()  # the oldest waiting frames gave way

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, end the stream and stop the thread."""
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.2)
                break
            except queue.Full:
                continue
        self._thread.join(timeout)

    def _dropped(self) -> None:
        self.dropped += 1
        self._on_drop()

    def _failed(self, encoder: _Encoder, what: str) -> None:
        log.warning("sink %s: %s", self.target.url, encoder.kill(what))
        self._on_error()
        self._dropped()

    def _run(self) -> None:
        encoder: _Encoder | None = None
        retry_at = 0.0
        backoff = FIRST_BACKOFF
        first: float | None = None
        last_pts = -1
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                frame, at, marks = item
                if encoder is None:
                    if time.monotonic() < retry_at:
                        self._dropped()
                        continue
                    encoder = _Encoder(self.target, _even(self._size or frame_size(frame)))
                    first, last_pts = None, -1
                if first is None:
                    first = at
                # Milliseconds from the stream's first frame, always increasing.
                pts = max(round((at - first) * 1000), last_pts + 1)
                try:
                    encoder.send(_output_frame(frame, marks, encoder.size), pts)
                except EncoderFailed as e:
                    self._failed(encoder, str(e))
                    encoder = None
                    retry_at = time.monotonic() + backoff
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                last_pts = pts
                backoff = FIRST_BACKOFF
                self.sent += 1
                self._on_frame()
        finally:
            if encoder is not None:
                problem = encoder.finish()
                if problem:
                    log.warning("sink %s: ending the stream: %s", self.target.url, problem)


class _Encoder:
    """The child process that runs FFmpeg for one connection to the sink."""

    def __init__(self, where: Target, size: tuple[int, int]) -> None:
        self.size = size
        context = multiprocessing.get_context("spawn")  # never fork a threaded worker
        self._conn, child_end = context.Pipe()
        self._process = context.Process(
            target=_encode, args=(child_end, where, size), name="sink-encoder", daemon=True
        )
        self._process.start()
        child_end.close()

    def send(self, frame: Frame, pts: int) -> None:
        message = bytearray(8 + frame.nbytes)
        message[:8] = pts.to_bytes(8, "little")
        np.frombuffer(message, np.uint8, offset=8)[:] = frame.reshape(-1)
        try:
            self._conn.send_bytes(message)
            if not self._conn.poll(STALL_SECONDS):
                raise EncoderFailed(f"no answer in {STALL_SECONDS:.0f} s")
            answer = self._conn.recv_bytes()
        except (OSError, EOFError) as e:
            raise EncoderFailed(f"the encoder process ended ({e!r})") from None
        if answer != b"ok":
            raise EncoderFailed(answer.decode(errors="replace"))

    def finish(self) -> str:
        """End the stream; what went wrong, if anything."""
        try:
            self._conn.send_bytes(_END_OF_STREAM)
            if self._conn.poll(STALL_SECONDS):
                answer = self._conn.recv_bytes()
                if answer != b"ok":
                    return self.kill(answer.decode(errors="replace"))
        except (OSError, EOFError):
            pass
        self._process.join(STALL_SECONDS)
        return self.kill("") if self._process.is_alive() else ""

    def kill(self, why: str) -> str:
        """Stop the process whatever it is doing; returns why, for the log."""
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._conn.close()
        return why or "the encoder process did not end; killed"


def _encode(conn: Connection, where: Target, size: tuple[int, int]) -> None:
    """The encoder process: frames (8 bytes of pts, then BGR pixels) from conn until an empty
    message, each answered `ok` once muxed, or with what failed before the process ends."""
    av = load_av()
    width, height = size
    container = None
    try:
        container = av.open(where.url, mode="w", format=where.format)
        stream = container.add_stream(
            "libx264", rate=25, options={"preset": "ultrafast", "tune": "zerolatency"}
        )
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = TIME_BASE
        while message := conn.recv_bytes():
            pixels = np.frombuffer(message, np.uint8, offset=8).reshape(height, width, 3)
            video = av.VideoFrame.from_ndarray(pixels, format="bgr24")
            video.pts = int.from_bytes(message[:8], "little")
            video.time_base = TIME_BASE
            for packet in stream.encode(video):
                container.mux(packet)
            conn.send_bytes(b"ok")
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        container = None
        conn.send_bytes(b"ok")
    except (av.FFmpegError, OSError, ValueError) as e:
        with contextlib.suppress(OSError):
            conn.send_bytes(f"{type(e).__name__}: {e}".encode())
    except EOFError:
        pass  # the worker went away
    finally:
        if container is not None:
            with contextlib.suppress(av.FFmpegError, OSError):
                container.close()


def _output_frame(frame: Frame, marks: tuple[TrackMark, ...], size: tuple[int, int]) -> Frame:
    """The frame at the stream's size, with the tracks drawn on it (a new array: the pipeline
    may still read the camera's)."""
    width, height = size
    camera_height, camera_width = frame.shape[:2]
    out: Frame
    if (camera_width, camera_height) != (width, height):
        out = np.asarray(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA), np.uint8)
    else:
        out = np.array(frame, np.uint8)  # a copy
    if marks:
        draw(out, marks, (width / camera_width, height / camera_height))
    return out


def frame_size(frame: Frame) -> tuple[int, int]:
    height, width = frame.shape[:2]
    return width, height


def _even(size: tuple[int, int]) -> tuple[int, int]:
    """Sides rounded down to even numbers (H.264 in 4:2:0 needs them)."""
    width, height = size
    return max(2, width - width % 2), max(2, height - height % 2)
