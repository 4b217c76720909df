"""`facegrid-video`: a video worker.

This first version follows the camera assignment: every `poll_interval` it asks the control
plane which cameras belong to its detector and reports them (log and metrics). Capture, motion
gating, detection, tracking and best-face posting are built on top of this loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import grpc
from prometheus_client import REGISTRY, Gauge

from facegrid.entrypoint import run_service
from facegrid.observability import start_metrics_server
from facegrid.v1 import controlplane_pb2 as cp
from facegrid.v1 import controlplane_pb2_grpc
from facegrid.video.settings import VideoSettings

log = logging.getLogger(__name__)


async def serve(settings: VideoSettings) -> None:
    assigned = Gauge(
        "facegrid_video_cameras_assigned",
        "Active cameras assigned to this worker's detector",
        registry=REGISTRY,
    )
    if settings.metrics_listen:
        start_metrics_server(settings.metrics_listen, REGISTRY)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    known: set[str] = set()
    async with grpc.aio.insecure_channel(settings.controlplane) as channel:
        stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
        while not stop.is_set():
            try:
                response = await stub.ListCameras(
                    cp.ListCamerasRequest(detector=settings.detector_name), timeout=10
                )
            except grpc.aio.AioRpcError as e:
                log.warning("control plane unavailable: %s", e.details())
            else:
                active = {c.id: c for c in response.cameras if c.active}
                for camera_id in active.keys() - known:
                    log.info("camera %s assigned: %s", camera_id, active[camera_id].url)
                for camera_id in known - active.keys():
                    log.info("camera %s released", camera_id)
                known = set(active)
                assigned.set(len(known))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.poll_interval)


def main(argv: list[str] | None = None) -> None:
    run_service("facegrid-video", "Run a FaceGrid video worker.", VideoSettings, serve, argv)
