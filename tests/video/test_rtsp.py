"""A camera over RTSP, served by a real RTSP server (GStreamer's, from Debian's packages), cut
mid-run and restored: the worker reconnects and carries on.

The API is a recording HTTP server (tests/video/recorder.py); detection runs on the session's
real extractor.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from facegrid.video.core.options import parse
from facegrid.video.worker import Worker
from tests.conftest import FACES, free_port
from tests.video.recorder import recording

SERVER = Path(__file__).with_name("rtsp_server.py")
CLIP = FACES / "face_recognition" / "examples" / "short_hamilton_clip.mp4"
SYSTEM_PYTHON = "/usr/bin/python3"  # has GStreamer's GObject bindings (.ci/run installs them)


@pytest.fixture
def rtsp() -> Iterator[Callable[[], subprocess.Popen[str]]]:
    """Starts the RTSP server on one port; the test may stop and start it again."""
    port = free_port()
    started: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER), str(port), str(CLIP)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == "serving", f"the RTSP server did not start: {line}"
        started.append(process)
        return process

    start.url = f"rtsp://127.0.0.1:{port}/live"  # type: ignore[attr-defined]
    yield start
    for process in started:
        process.kill()
        process.wait(10)
        assert process.stdout is not None
        process.stdout.close()


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_the_worker_reconnects_when_the_stream_comes_back(
    rtsp: Callable[[], subprocess.Popen[str]], extractor_address: str
) -> None:
    server = rtsp()
    with recording() as api:
        options = parse(
            [
                "--api-url", api.url,
                "--api-token", "t",
                "--extractor", extractor_address,
                "--camid", "door",
                "--source", rtsp.url,  # type: ignore[attr-defined]
                "--source-params", "rtsp_transport=tcp",
                "-r", "1",
                "--rt-refresh", "500",
            ]
        )  # fmt: skip
        registry = CollectorRegistry()
        worker = Worker(options, registry)
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            await _until(lambda: "door" in worker.pipelines, 10, "the camera to start")
            stats = worker.pipelines["door"].stats
            await _until(lambda: stats.frames_in > 30 and api.requests, 60, "frames and a post")

            server.kill()  # the stream is cut
            server.wait(10)
            await asyncio.sleep(3)
            cut_at = stats.frames_in
            posts_at = len(api.requests)
            await asyncio.sleep(1)
            assert stats.frames_in == cut_at  # nothing arrives while it is down

            rtsp()  # and restored on the same address
            await _until(lambda: stats.frames_in > cut_at + 30, 60, "frames after the restore")
            await _until(lambda: len(api.requests) > posts_at, 60, "a post after the restore")
            reconnects = registry.get_sample_value(
                "facegrid_video_reconnects_total", {"camera": "door"}
            )
            assert reconnects is not None and reconnects >= 1
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)
            worker.close()
    (pipeline,) = worker.finished.values()
    assert pipeline.stats.post_errors == 0
