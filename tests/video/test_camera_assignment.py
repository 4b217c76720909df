"""A video worker follows which cameras the control plane assigns to its detector."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import grpc
import pytest

from facegrid.v1 import controlplane_pb2 as cp
from facegrid.v1 import controlplane_pb2_grpc


@pytest.fixture
async def plane(controlplane_address: str) -> AsyncIterator[controlplane_pb2_grpc.ControlPlaneStub]:
    async with grpc.aio.insecure_channel(controlplane_address) as channel:
        yield controlplane_pb2_grpc.ControlPlaneStub(channel)


async def _read_until(stream: asyncio.StreamReader, marker: str, timeout: float) -> str:
    seen = []

    async def read() -> str:
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError("worker exited; it said:\n" + "".join(seen))
            seen.append(line)
            if marker in line:
                return line

    return await asyncio.wait_for(read(), timeout)


async def test_worker_picks_up_and_releases_its_cameras(
    plane: controlplane_pb2_grpc.ControlPlaneStub, controlplane_address: str
) -> None:
    mine = await plane.CreateCamera(
        cp.CreateCameraRequest(url="rtsp://cam/1", detector="detec1", active=True)
    )
    await plane.CreateCamera(
        cp.CreateCameraRequest(url="rtsp://cam/2", detector="other", active=True)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "facegrid.video",
        env={
            **env,
            "FACEGRID_VIDEO_CONTROLPLANE": controlplane_address,
            "FACEGRID_VIDEO_DETECTOR_NAME": "detec1",
            "FACEGRID_VIDEO_RELOAD_TIMEOUT": "0.2",
            "FACEGRID_VIDEO_METRICS_LISTEN": "",
        },
        stderr=asyncio.subprocess.PIPE,
    )
    assert worker.stderr is not None
    try:
        line = await _read_until(worker.stderr, "assigned", 30)
        assert mine.id in line
        assert "rtsp://cam/1" in line
        # Nothing answers at rtsp://cam/1: the worker reports the camera Reconnecting.
        for _ in range(100):
            seen = await plane.GetCamera(cp.GetCameraRequest(id=mine.id))
            if seen.HasField("status"):
                break
            await asyncio.sleep(0.1)
        assert seen.status.phase == "Reconnecting" and seen.status.frames_per_second == 0
        await plane.DeleteCamera(cp.DeleteCameraRequest(id=mine.id))
        line = await _read_until(worker.stderr, "released", 10)
        assert mine.id in line
    finally:
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 10) == 0
