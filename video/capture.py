"""Frames from a camera or a file, through OpenCV's FFmpeg backend.

Sources as the seed writes them: `rtsp://...` (and other URLs), `/dev/videoN`, `file@FPS:PATH`
(a file played at FPS frames per second) and a plain file path (read as fast as it decodes).
`source-params` become FFmpeg options. A live source that fails or stops is reopened with
exponential backoff until the worker stops; a file ends the stream.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# OpenCV reads FFmpeg options from the environment when a capture opens: one open at a time.
_OPEN_LOCK = threading.Lock()


@dataclass(frozen=True)
class Source:
    location: str
    # Play a file at this rate (file@FPS:PATH); None: as fast as it decodes, or live.
    fps: float | None
    live: bool


def parse_source(text: str) -> Source:
    text = text.strip()
    if text.startswith("file@"):
        rate, sep, path = text.removeprefix("file@").partition(":")
        try:
            fps = float(rate)
        except ValueError:
            fps = 0.0
        if not sep or not path or fps <= 0:
            raise ValueError(f"{text!r}: write file@FPS:PATH with a positive FPS")
        return Source(path, fps, live=False)
    if text.startswith("/dev/video") or "://" in text:
        return Source(text, None, live=True)
    if not text:
        raise ValueError("the source is empty")
    return Source(text, None, live=False)


@dataclass(frozen=True)
class Captured:
    frame: Frame
    # Seconds: of video for files (from the start), of wall clock for live sources.
    time: float
    index: int


class Capture:
    def __init__(
        self,
        source: Source,
        params: tuple[tuple[str, str], ...] = (),
        stop: threading.Event | None = None,
        on_reconnect: Callable[[], None] = lambda: None,
    ) -> None:
        self.source = source
        self._params = params
        self._stop = stop or threading.Event()
        self._on_reconnect = on_reconnect
        self.reconnects = 0
        self.fps = 0.0

    def _open(self) -> cv2.VideoCapture:
        with _OPEN_LOCK:
            previous = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
            if self._params:
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "|".join(
                    f"{k};{v}" for k, v in self._params
                )
            try:
                capture = cv2.VideoCapture(self.source.location, cv2.CAP_FFMPEG)
            finally:
                if self._params:
                    if previous is None:
                        os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                    else:
                        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = previous
        return capture

    def frames(self) -> Iterator[Captured]:
        """Frames until the file ends or the worker stops; live sources are reopened."""
        index = 0
        backoff = FIRST_BACKOFF
        while not self._stop.is_set():
            capture = self._open()
            if not capture.isOpened():
                capture.release()
                if not self.source.live:
                    raise OSError(f"cannot open {self.source.location}")
                log.warning("cannot open %s; again in %.1f s", self.source.location, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                self.reconnects += 1
                self._on_reconnect()
                continue
            self.fps = self.source.fps or capture.get(cv2.CAP_PROP_FPS) or 25.0
            started = time.monotonic()
            first = index
            try:
                while not self._stop.is_set():
                    ok, frame = capture.read()
                    if not ok:
                        break
                    backoff = FIRST_BACKOFF
                    if self.source.live:
                        at = time.time()
                    else:
                        at = index / self.fps
                        if self.source.fps:  # play at the given rate
                            due = started + (index - first) / self.source.fps
                            delay = due - time.monotonic()
                            if delay > 0:
                                self._stop.wait(delay)
                    yield Captured(np.asarray(frame, dtype=np.uint8), at, index)
                    index += 1
            finally:
                capture.release()
            if not self.source.live:
                return
            log.warning("%s stopped; reconnecting in %.1f s", self.source.location, backoff)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            self.reconnects += 1
            self._on_reconnect()
