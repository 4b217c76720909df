"""The camera's output stream (sink-url, sink-res, draw-track).

The receiving end is FFmpeg itself (through PyAV) listening for an RTMP publisher on loopback:
a real RTMP implementation, so the worker's stream is checked by what a video server would
read from it. Detection runs on the session's real extractor; the API is a recording server.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import av
import cv2
import numpy as np
import psutil
import pytest
from prometheus_client import CollectorRegistry

from facegrid.video import sink
from facegrid.video.core.geometry import Box
from facegrid.video.core.options import OptionError, parse
from facegrid.video.core.tracking import TrackMark
from facegrid.video.sink import COLOURS, Target, draw, target
from facegrid.video.worker import Worker
from tests.conftest import FACES, free_port
from tests.video.recorder import recording

CLIP = FACES / "face_recognition" / "examples" / "short_hamilton_clip.mp4"  # 640x360, 29.97 fps


def test_sink_url_forms() -> None:
    # The seed's form, host:port, publishes to an nginx-rtmp `live` application.
    assert target("10.0.0.5:1935", "door") == Target("rtmp://10.0.0.5:1935/live/door", "flv")
    assert target("rtmp://media/app/key", "door") == Target("rtmp://media/app/key", "flv")
    assert target("rtsp://media:8554/door", "x") == Target("rtsp://media:8554/door", "rtsp")
    assert target("udp://239.0.0.1:5000", "x") == Target("udp://239.0.0.1:5000", "mpegts")
    assert target("/recordings/door.mp4", "x") == Target("/recordings/door.mp4", None)


def test_sink_res_is_checked_where_it_is_given() -> None:
    base = ["--api-token", "t", "--source", str(CLIP)]
    assert parse([*base, "--sink-res", "1280x720"]).sink_res == "1280x720"
    parse([*base, "--sink-res", "1280\u0445720"])  # the reference's Cyrillic x
    with pytest.raises(OptionError, match="--sink-res"):
        parse([*base, "--sink-res", "1280:720"])
    with pytest.raises(OptionError, match="--sink-res"):
        parse([*base, "--sink-res", "8x8"])


def test_without_pyav_the_worker_refuses_sink_url() -> None:
    """PyAV is an optional dependency: asked for a sink without it, the worker says how to get
    it and exits with status 2 before it starts (an import of `av` fails in this process)."""
    program = (
        "import sys; sys.modules['av'] = None\n"
        "from facegrid.video.main import main\n"
        "main(['--api-token', 't', '--source', sys.argv[1], '--sink-url', '127.0.0.1:1935'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(CLIP)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "pip install 'facegrid[sink]'" in done.stderr


def test_draw_marks_box_id_and_path() -> None:
    frame = np.zeros((200, 400, 3), np.uint8)
    mark = TrackMark(3, Box(100, 50, 200, 150), ((50.0, 100.0), (100.0, 100.0), (150.0, 100.0)))
    draw(frame, [mark], (1.0, 1.0))
    colour = COLOURS[3 % len(COLOURS)]
    assert (frame[50, 100:201] == colour).all()  # the box's top edge
    assert (frame[50:151, 200] == colour).all()  # its right edge
    assert (frame[100, 50:151] == colour).all()  # the path, to the box's centre
    assert (frame[60:95, 110:190] == 0).all()  # the rest of the box is left alone
    assert (frame[105:140, 110:190] == 0).all()
    # Scaled: the camera's pixels to the stream's.
    small = np.zeros((100, 200, 3), np.uint8)
    draw(small, [mark], (0.5, 0.5))
    assert (small[25, 50:101] == colour).all()


@dataclass
class Received:
    frames: list[np.ndarray] = field(default_factory=list)  # BGR
    times: list[float] = field(default_factory=list)  # seconds, from the stream
    error: BaseException | None = None


@pytest.fixture
def rtmp_listener() -> Iterator[tuple[str, Received]]:
    """FFmpeg waiting for a publisher at rtmp://127.0.0.1:PORT/live/door, keeping what it
    decodes until the publisher leaves."""
    port = free_port()
    received = Received()

    def listen() -> None:
        url = f"rtmp://127.0.0.1:{port}/live/door"
        try:
            with av.open(url, format="flv", options={"listen": "1", "timeout": "60"}) as c:
                for frame in c.decode(video=0):
                    received.frames.append(frame.to_ndarray(format="bgr24"))
                    received.times.append(float(frame.time or 0.0))
        except av.error.EOFError:
            pass
        except OSError as e:  # the publisher closed the connection: the end of the stream
            if not received.frames:
                received.error = e

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    # Wait for the socket to listen (connecting to see would be taken for the publisher).
    deadline = time.monotonic() + 10
    while not any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == port
        for c in psutil.net_connections("tcp")
    ):
        assert time.monotonic() < deadline, "FFmpeg did not listen"
        time.sleep(0.05)
    yield f"127.0.0.1:{port}", received
    thread.join(30)
    assert not thread.is_alive(), "the RTMP listener did not finish"


def _source_frames() -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(CLIP))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


async def _run_worker(extractor: str, *sink_options: str) -> tuple[Worker, CollectorRegistry, int]:
    """The worker on the Hamilton clip in offline mode, posting to a recording API, with these
    options; returns it (its pipeline finished), its metrics and how many posts it made."""
    with recording() as api:
        options = parse(
            [
                "--api-url", api.url,
                "--api-token", "t",
                "--extractor", extractor,
                "--camid", "door",
                "--source", str(CLIP),
                "-r", "0",
                *sink_options,
            ]
        )  # fmt: skip
        registry = CollectorRegistry()
        worker = Worker(options, registry)
        try:
            await asyncio.wait_for(worker.run(asyncio.Event()), 240)
        finally:
            worker.close()
        return worker, registry, len(api.requests)


async def test_the_camera_is_streamed_with_its_tracks(
    rtmp_listener: tuple[str, Received], extractor_address: str
) -> None:
    address, received = rtmp_listener
    worker, registry, posts = await _run_worker(
        extractor_address,
        "--disable-drops",  # every frame is processed, so every frame is streamed
        "--sink-url", address,  # the seed's host:port form
        "--sink-res", "320x180",
        "--draw-track",
    )  # fmt: skip
    assert posts, "no face was posted"
    (pipeline,) = worker.finished.values()
    for _ in range(100):  # the listener decodes what is still in flight
        if len(received.frames) >= pipeline.stats.frames_in:
            break
        await asyncio.sleep(0.1)
    assert received.error is None, received.error
    sent = registry.get_sample_value("facegrid_video_sink_frames_total", {"camera": "door"})
    dropped = registry.get_sample_value(
        "facegrid_video_sink_frames_dropped_total", {"camera": "door"}
    )
    assert pipeline.stats.frames_in == 275
    assert sent is not None and dropped is not None
    assert sent + dropped == pipeline.stats.frames_in
    assert len(received.frames) == sent
    assert sent >= 0.9 * pipeline.stats.frames_in
    assert {f.shape for f in received.frames} == {(180, 320, 3)}
    # The stream keeps the source's timeline: each frame at its own time in the clip.
    source = _source_frames()
    fps = 29.97
    indices = [round(t * fps) for t in received.times]
    assert indices == sorted(set(indices))
    assert indices[-1] >= 270
    # With draw-track, the faces' boxes are drawn: frames of the stream differ from the
    # camera's (scaled the same way) by far more than H.264 does elsewhere.
    marked = 0
    for frame, index in zip(received.frames, indices, strict=True):
        expected = cv2.resize(source[index], (320, 180), interpolation=cv2.INTER_AREA)
        strong = (np.abs(frame.astype(np.int16) - expected).max(axis=2) > 80).sum()
        marked += strong > 60
    assert marked >= len(received.frames) // 2, f"{marked} of {len(received.frames)} drawn"


async def test_an_unreachable_sink_costs_no_posts(extractor_address: str) -> None:
    # Nothing listens on that port.
    worker, registry, posts = await _run_worker(
        extractor_address, "--sink-url", f"127.0.0.1:{free_port()}"
    )
    assert posts, "no face was posted"
    (pipeline,) = worker.finished.values()
    assert pipeline.stats.post_errors == 0
    errors = registry.get_sample_value("facegrid_video_sink_errors_total", {"camera": "door"})
    sent = registry.get_sample_value("facegrid_video_sink_frames_total", {"camera": "door"})
    assert errors is not None and errors >= 1
    assert sent == 0


async def test_a_sink_that_stops_answering_costs_no_posts(
    extractor_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that takes the connection and never answers: FFmpeg blocks (holding the GIL
    in PyAV) in the encoder process, which is killed after STALL_SECONDS; the worker reads,
    detects and posts all along."""
    monkeypatch.setattr(sink, "STALL_SECONDS", 1.0)
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    accepting = threading.Thread(
        target=lambda: held.extend(server.accept()[0] for _ in range(100)), daemon=True
    )
    accepting.start()
    port = server.getsockname()[1]
    try:
        worker, registry, posts = await _run_worker(
            extractor_address, "--sink-url", f"127.0.0.1:{port}"
        )
        assert posts, "no face was posted"
    finally:
        server.close()
        for connection in held:
            connection.close()
    (pipeline,) = worker.finished.values()
    assert pipeline.stats.frames_in == 275
    assert pipeline.stats.post_errors == 0
    errors = registry.get_sample_value("facegrid_video_sink_errors_total", {"camera": "door"})
    sent = registry.get_sample_value("facegrid_video_sink_frames_total", {"camera": "door"})
    assert held, "the sink never connected"
    assert errors is not None and errors >= 1
    assert sent == 0
