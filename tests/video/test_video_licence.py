"""A worker takes a licence lease per camera: cameras past the licence are refused, counted in
the metrics, and a lease frees up when its camera goes."""

from __future__ import annotations

from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from facegrid.licence import LicenceClient
from facegrid.v1 import controlplane_pb2 as cp
from facegrid.v1 import controlplane_pb2_grpc
from facegrid.v1 import licensing_pb2 as licence_pb2
from facegrid.video.core.options import parse
from facegrid.video.worker import Worker
from tests.conftest import FACES
from tests.licensing.servers import new_vendor, running
from tests.video.recorder import recording

CLIP = FACES / "face_recognition" / "examples" / "short_hamilton_clip.mp4"


async def test_cameras_past_the_licence_are_refused(
    tmp_path: Path, controlplane_address: str, extractor_address: str
) -> None:
    vendor = new_vendor(tmp_path)
    folder = tmp_path / "license"
    folder.mkdir()
    (folder / "a.lic").write_bytes(vendor.licence(limits={"cameras": 1}))
    async with (
        running(vendor, folder) as server,
        grpc.aio.insecure_channel(controlplane_address) as plane_channel,
        grpc.aio.insecure_channel(server.address) as licence_channel,
    ):
        plane = controlplane_pb2_grpc.ControlPlaneStub(plane_channel)
        cameras = [
            await plane.CreateCamera(
                cp.CreateCameraRequest(url=f"file@5:{CLIP}", detector="licensed", active=True)
            )
            for _ in range(2)
        ]
        licence = LicenceClient(licence_channel, "video", "video-test")
        await licence.refresh()
        registry = CollectorRegistry()
        with recording() as api:
            options = parse(
                [
                    "--api-url", api.url,
                    "--api-token", "t",
                    "--extractor", extractor_address,
                    "--controlplane", controlplane_address,
                    "--detector-name", "licensed",
                ]
            )  # fmt: skip
            worker = Worker(options, registry, licence)
            try:
                await worker.sync()
                assert len(worker.pipelines) == 1
                assert registry.get_sample_value("facegrid_video_cameras_refused") == 1
                info = await server.stub.GetInfo(licence_pb2.InfoRequest())
                assert {m.resource: m.in_use for m in info.limits}["cameras"] == 1

                (running_id,) = worker.pipelines
                await plane.DeleteCamera(cp.DeleteCameraRequest(id=running_id))
                await worker.sync()  # its lease goes, and the other camera gets it
                assert list(worker.pipelines) == [c.id for c in cameras if c.id != running_id]
                assert registry.get_sample_value("facegrid_video_cameras_refused") == 0
            finally:
                for camera_id in list(worker.pipelines):
                    worker.pipelines[camera_id].stop()
                for pipeline in worker.pipelines.values():
                    pipeline.join(10)
                worker.close()
        for camera in cameras:
            if camera.id != running_id:
                await plane.DeleteCamera(cp.DeleteCameraRequest(id=camera.id))
