"""What the worker talks to: the extractor (detection, the normalized face) over gRPC and the
REST API (the camera list, posting faces) over HTTP. Both are called from pipeline threads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import grpc
import httpx

from facegrid import balancing
from facegrid.v1 import extractor_pb2 as pb
from facegrid.v1 import extractor_pb2_grpc
from facegrid.video.core.geometry import Box, Region, parse_region
from facegrid.video.core.options import Options
from facegrid.video.core.tracking import Detection


class ExtractorError(Exception):
    pass


class Extractor:
    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self._channel = balancing.sync_channel(address)
        self._stub = extractor_pb2_grpc.ExtractorStub(self._channel)
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def detect(
        self, jpeg: bytes, rot: Region | None, min_face_size: int, max_face_size: int
    ) -> list[Detection]:
        request = pb.DetectRequest(
            images=[pb.Image(data=jpeg)],
            min_face_size=min_face_size,
            max_face_size=max_face_size,
        )
        if rot is not None:  # detect and track only inside the clipping rectangle
            request.roi.CopyFrom(
                pb.BBox(x1=rot.x, y1=rot.y, x2=rot.x + rot.width, y2=rot.y + rot.height)
            )
        try:
            response = self._stub.Detect(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise ExtractorError(f"detect: {e.code().name} {e.details()}") from e
        (result,) = response.results
        if result.error.code:
            raise ExtractorError(f"detect: {result.error.code} {result.error.reason}")
        return [
            Detection(
                Box(f.bbox.x1, f.bbox.y1, f.bbox.x2, f.bbox.y2),
                f.quality,
                tuple((p.x, p.y) for p in f.landmarks),
            )
            for f in result.faces
        ]

    def normalized(self, jpeg: bytes, detection: Detection) -> bytes:
        """The aligned face chip (PNG) the seed posts as `face0`."""
        box = detection.box
        item = pb.ExtractItem(
            image=pb.Image(data=jpeg),
            bbox=pb.BBox(x1=round(box.x1), y1=round(box.y1), x2=round(box.x2), y2=round(box.y2)),
            landmarks=[pb.Point(x=x, y=y) for x, y in detection.landmarks],
        )
        try:
            response = self._stub.Extract(
                pb.ExtractRequest(items=[item], normalized=True), timeout=self._timeout
            )
        except grpc.RpcError as e:
            raise ExtractorError(f"extract: {e.code().name} {e.details()}") from e
        (result,) = response.results
        if result.error.code:
            raise ExtractorError(f"extract: {result.error.code} {result.error.reason}")
        return bytes(result.normalized)


@dataclass(frozen=True)
class Camera:
    id: str
    url: str
    rot: Region | None = None
    roi: Region | None = None
    # This camera's overrides of the worker's options (name, ini-style value), sorted.
    options: tuple[tuple[str, str], ...] = ()


class Api:
    """The FindFace-compatible REST API: any such server, FaceGrid's gateway included."""

    def __init__(self, options: Options) -> None:
        headers = dict(options.headers)
        if options.api_token:
            headers["Authorization"] = f"Token {options.api_token}"
        self._client = httpx.Client(
            base_url=options.api_base, headers=headers, timeout=options.req_timeout
        )
        self._options = options

    def close(self) -> None:
        self._client.close()

    def cameras(self) -> list[Camera]:
        """Active cameras of this worker's detector (GET camera-url)."""
        response = self._client.get(self._options.camera_url)
        response.raise_for_status()
        body: Any = response.json()
        listed = body if isinstance(body, list) else body.get("results", [])
        cameras = []
        for c in listed:
            if c.get("detector") != self._options.detector_name or not c.get("active", True):
                continue
            if not c.get("url"):
                continue
            cameras.append(
                Camera(
                    str(c["id"]),
                    str(c["url"]),
                    _region(c.get("rot")),
                    _region(c.get("roi")),
                )
            )
        return cameras

    def post(
        self,
        camera_id: str,
        jpeg: bytes,
        face0: bytes,
        box: Box,
        timestamp: str | None,
        detector_params: dict[str, float],
    ) -> httpx.Response:
        """One face as the seed's fkvideo_detector posts it (see its "Render Detection
        Results" example)."""
        x1, y1, x2, y2 = box.rounded()
        data: dict[str, str] = {
            "bbox": json.dumps([[x1, y1, x2, y2]]),
            "detectorParams": json.dumps(detector_params),
        }
        if camera_id:
            data["cam_id"] = camera_id
        if timestamp is not None:
            data["timestamp"] = timestamp
        data.update(dict(self._options.body))
        files = {
            self._options.img_arg: ("frame.jpeg", jpeg, "image/jpeg"),
            "face0": ("face0_norm.png", face0, "image/png"),
        }
        return self._client.post(self._options.request_url, data=data, files=files)


def _region(value: Any) -> Region | None:
    if not value:
        return None
    try:
        return parse_region(value)
    except (ValueError, TypeError):
        return None
