"""The worker: which cameras to process, one pipeline each.

Cameras come from `--source`/`--camid` (one camera; with `sink-url`, its video is also sent
on, see facegrid.video.sink), from the REST API's camera list
(`camera-url`, those of `detector-name`), or from FaceGrid's control plane (`controlplane`).
The list is read again every `reload-timeout` seconds unless `single-pass`: new cameras start,
removed ones stop, and a camera whose URL, rot or roi changed restarts with its new settings,
without restarting the worker. At most `detectors-max` cameras run; with a license server each
one holds a `cameras` lease, so cameras beyond the licence are refused and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import replace

import grpc
import httpx
from prometheus_client import CollectorRegistry

from facegrid.licence import Lease, LicenceClient, LicenceRefused
from facegrid.v1 import controlplane_pb2 as cp
from facegrid.v1 import controlplane_pb2_grpc
from facegrid.video.capture import parse_source
from facegrid.video.clients import Api, Camera, Extractor
from facegrid.video.core.geometry import Region, parse_resolution
from facegrid.video.core.options import OptionError, Options, override
from facegrid.video.metrics import WorkerMetrics
from facegrid.video.pipeline import CameraPipeline
from facegrid.video.sink import Sink, SinkUnavailable, target

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self,
        options: Options,
        registry: CollectorRegistry,
        licence: LicenceClient | None = None,
        *,
        keep_answers: bool = False,
    ) -> None:
        self.options = options
        self.metrics = WorkerMetrics(registry)
        self.extractor = Extractor(options.extractor)
        self.api = Api(options)
        self.licence = licence or LicenceClient(None, "video", "")
        self.pipelines: dict[str, CameraPipeline] = {}
        self.finished: dict[str, CameraPipeline] = {}
        self._leases: dict[str, Lease] = {}
        self._keep_answers = keep_answers
        # Per camera: (frames in, time.monotonic()) at the last report, for frames/s.
        self._seen: dict[str, tuple[int, float]] = {}
        if options.sink_url and not options.source:
            log.warning(
                "sink-url streams the one camera of --source; cameras from %s get none",
                "the control plane" if options.controlplane else "the API",
            )

    async def cameras(self) -> list[Camera]:
        o = self.options
        if o.source:
            return [Camera(o.camid, o.source, o.rot, o.roi)]
        if o.controlplane:
            async with grpc.aio.insecure_channel(o.controlplane) as channel:
                stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
                response = await stub.ListCameras(
                    cp.ListCamerasRequest(detector=o.detector_name, worker=o.worker_name),
                    timeout=o.req_timeout,
                )
            return [
                Camera(
                    c.id, c.url, _region(c.rot), _region(c.roi), tuple(sorted(c.options.items()))
                )
                for c in response.cameras
                if c.active and c.url
            ]
        return await asyncio.to_thread(self.api.cameras)

    async def sync(self) -> None:
        """Bring the running pipelines in line with the camera list."""
        try:
            listed = await self.cameras()
        except (grpc.aio.AioRpcError, httpx.HTTPError, ValueError) as e:
            log.warning("cannot read the camera list: %r", e)
            return
        wanted = {c.id: c for c in sorted(listed, key=lambda c: c.id)}
        for camera_id, pipeline in list(self.pipelines.items()):
            camera = wanted.get(camera_id)
            if camera is None or camera != pipeline.camera:
                log.info("camera %s released" if camera is None else "camera %s changed", camera_id)
                await self._stop(camera_id)
        for camera_id, pipeline in list(self.pipelines.items()):
            if not pipeline.running:  # a file that ended
                await self._stop(camera_id)
        refused: list[cp.CameraRefusal] = []
        for camera in wanted.values():
            if camera.id in self.pipelines:
                continue
            done = self.finished.get(camera.id)
            if done is not None and done.camera == camera and not parse_source(camera.url).live:
                continue  # this file has been processed
            if len(self.pipelines) >= self.options.detectors_max:
                limit = f"detectors-max ({self.options.detectors_max}) cameras run already"
                refused.append(cp.CameraRefusal(id=camera.id, reason=limit))
                continue
            denied = await self._lease(camera.id)
            if denied is not None:
                refused.append(cp.CameraRefusal(id=camera.id, licence=True, reason=denied))
                continue
            problem = self._start(camera)
            if problem is not None:
                await self._release(camera.id)
                refused.append(cp.CameraRefusal(id=camera.id, reason=problem))
        if refused:
            log.warning("%d cameras not processed (detectors-max or the licence)", len(refused))
        self.metrics.refused.set(len(refused))
        self.metrics.cameras.set(len(self.pipelines))
        if self.options.controlplane:
            await self.report(refused)

    async def report(self, refused: list[cp.CameraRefusal]) -> None:
        """Tell the control plane how each camera is doing (shown in its Camera status)."""
        reports = camera_reports(self.pipelines, self._seen, time.monotonic())
        try:
            async with grpc.aio.insecure_channel(self.options.controlplane) as channel:
                await controlplane_pb2_grpc.ControlPlaneStub(channel).ReportCameras(
                    cp.ReportCamerasRequest(
                        worker=self.options.worker_name, cameras=reports, refused=refused
                    ),
                    timeout=self.options.req_timeout,
                )
        except grpc.aio.AioRpcError as e:
            log.warning("cannot report the cameras' state: %s", e.code().name)

    def _start(self, camera: Camera) -> str | None:
        """Start the camera's pipeline; a reason when its settings do not allow it."""
        try:
            source = parse_source(camera.url)
        except ValueError as e:
            log.error("camera %s: %s", camera.id, e)
            return str(e)
        options = self.options
        if camera.roi is not None:  # the camera's own region of interest
            options = replace(options, roi=camera.roi)
        try:
            options = override(options, dict(camera.options), f"camera {camera.id}")
        except OptionError as e:
            log.error("%s; the camera is not started", e)
            return str(e)
        metrics = self.metrics.camera(camera.id)
        sink = None
        if options.sink_url and options.source:
            try:
                sink = Sink(
                    target(options.sink_url, camera.id),
                    parse_resolution(options.sink_res),
                    on_frame=metrics.sink_frames.inc,
                    on_drop=metrics.sink_drops.inc,
                    on_error=metrics.sink_errors.inc,
                )
            except SinkUnavailable as e:
                log.error("camera %s: %s", camera.id, e)
                return str(e)
            log.info("camera %s: streaming to %s", camera.id, sink.target.url)
        pipeline = CameraPipeline(
            camera,
            source,
            options,
            self.extractor,
            self.api,
            metrics,
            sink=sink,
            keep_answers=self._keep_answers,
        )
        self.pipelines[camera.id] = pipeline
        pipeline.start()
        log.info("camera %s assigned: %s", camera.id, camera.url)
        return None

    async def _stop(self, camera_id: str) -> None:
        """Stop a camera's pipeline (at once if its stream already ended), keep it among the
        finished ones and give its lease back."""
        pipeline = self.pipelines.pop(camera_id)
        pipeline.stop()
        await asyncio.to_thread(pipeline.join, 10)
        self.finished[camera_id] = pipeline
        await self._release(camera_id)

    async def _lease(self, camera_id: str) -> str | None:
        """Take a `cameras` lease for the camera; the licence's reason when it is refused."""
        try:
            lease = await self.licence.acquire("cameras")
        except (LicenceRefused, grpc.aio.AioRpcError) as e:
            log.warning("camera %s refused: %s", camera_id, e)
            return str(e)
        if not lease.granted:
            log.warning("camera %s refused: %s", camera_id, lease.reason)
            return lease.reason or "the licence's camera limit is reached"
        self._leases[camera_id] = lease
        return None

    async def _release(self, camera_id: str) -> None:
        lease = self._leases.pop(camera_id, None)
        if lease is not None:
            try:
                await self.licence.release(lease)
            except grpc.aio.AioRpcError as e:
                log.warning("could not release the lease of camera %s: %s", camera_id, e)

    async def run(self, stop: asyncio.Event) -> None:
        """Until stopped, or, for a single pass, until every camera's stream ended."""
        once = self.options.single_pass or bool(self.options.source)
        await self.sync()
        while not stop.is_set():
            if once and not any(p.running for p in self.pipelines.values()):
                break
            interval = 0.2 if once else self.options.reload_timeout
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if not once:
                await self.sync()
        for camera_id in list(self.pipelines):
            await self._stop(camera_id)

    def close(self) -> None:
        self.extractor.close()
        self.api.close()


def camera_reports(
    pipelines: dict[str, CameraPipeline], seen: dict[str, tuple[int, float]], now: float
) -> list[cp.CameraReport]:
    """Each running camera's state since the previous report (`seen` is updated)."""
    reports = []
    for camera_id, pipeline in sorted(pipelines.items()):
        stats = pipeline.stats
        frames, since = seen.get(camera_id, (0, now))
        elapsed = now - since
        rate = (stats.frames_in - frames) / elapsed if elapsed > 0 else 0.0
        report = cp.CameraReport(
            id=camera_id,
            streaming=stats.frames_in > frames,
            frames_per_second=rate,
            posts=stats.posts,
        )
        if stats.last_post is not None:
            report.last_post.FromDatetime(dt.datetime.fromtimestamp(stats.last_post, dt.UTC))
        reports.append(report)
        seen[camera_id] = (stats.frames_in, now)
    for gone in set(seen) - set(pipelines):
        del seen[gone]
    return reports


def _region(message: cp.Region) -> Region | None:
    if message.width <= 0 or message.height <= 0:
        return None
    return Region(message.width, message.height, message.x, message.y)
