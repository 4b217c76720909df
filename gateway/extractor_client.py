"""The Extractor port over gRPC: one photo per call, its faces as one batch."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from facegrid.gateway.core.errors import ApiError, BadParam, LicenceError, ServiceUnavailable
from facegrid.gateway.core.faces import PhotoTooLarge
from facegrid.gateway.core.model import Attributes, BBox
from facegrid.gateway.core.ports import Detected, Detection, Extracted, Extraction, Wanted
from facegrid.gateway.timing import timed
from facegrid.v1 import extractor_pb2 as pb
from facegrid.v1 import extractor_pb2_grpc

# The extractor's per-item error codes, as the REST API reports them.
_ITEM_ERRORS: dict[str, type[ApiError]] = {
    "IMAGE_TOO_LARGE": PhotoTooLarge,
    "IMAGE_EMPTY": BadParam,
    "IMAGE_DECODING_FAILED": BadParam,
}


def _box(box: pb.BBox) -> BBox:
    return BBox(box.x1, box.y1, box.x2, box.y2)


def _wire_box(box: BBox) -> pb.BBox:
    return pb.BBox(x1=box.x1, y1=box.y1, x2=box.x2, y2=box.y2)


def _item_error(error: pb.ItemError, param: str) -> ApiError:
    kind = _ITEM_ERRORS.get(error.code, BadParam)
    return kind(error.reason or error.code, param=param, value=error.code)


class ExtractorClient:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = extractor_pb2_grpc.ExtractorStub(channel)
        self._timeout = timeout

    async def _call(self, method: str, request: object) -> object:
        try:
            async with timed("extract"):
                return await getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise BadParam(e.details() or "bad request", param="photo") from e
            if e.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise LicenceError(f"extractor: {e.details()}") from e
            raise ServiceUnavailable(f"extractor: {e.code().name} {e.details()}") from e

    async def model(self) -> str:
        response = await self._call("GetModelInfo", pb.ModelInfoRequest())
        assert isinstance(response, pb.ModelInfoResponse)
        for entry in response.models:
            if entry.task == "facen":
                return f"{entry.name}@{response.bundle_version}"
        raise ServiceUnavailable("extractor: no face vector model is installed")

    async def detect(self, photo: bytes, roi: BBox | None = None) -> Detected:
        request = pb.DetectRequest(images=[pb.Image(data=photo)])
        if roi is not None:
            request.roi.CopyFrom(_wire_box(roi))
        response = await self._call("Detect", request)
        assert isinstance(response, pb.DetectResponse)
        (result,) = response.results
        if result.error.code:
            raise _item_error(result.error, "photo")
        faces = [
            Detection(
                _box(f.bbox),
                f.score,
                f.quality,
                tuple(v for p in f.landmarks for v in (p.x, p.y)),
            )
            for f in result.faces
        ]
        return Detected(faces, result.orientation or 1)

    async def extract(self, photo: bytes, faces: Sequence[Detection], wanted: Wanted) -> Extracted:
        image = pb.Image(data=photo)
        items = []
        for face in faces:
            landmarks = [
                pb.Point(x=face.landmarks[i], y=face.landmarks[i + 1])
                for i in range(0, len(face.landmarks), 2)
            ]
            items.append(
                pb.ExtractItem(image=image, bbox=_wire_box(face.bbox), landmarks=landmarks)
            )
        return await self._extract(items, wanted)

    async def extract_chip(self, chip: bytes, wanted: Wanted) -> Extracted:
        item = pb.ExtractItem(image=pb.Image(data=chip), prenormalized=True)
        return await self._extract([item], wanted, param="face0")

    async def extract_biggest(self, photo: bytes, wanted: Wanted) -> Extracted:
        # An item without a box or landmarks: the extractor detects and takes the biggest face,
        # which saves a second decode and alignment over Detect then Extract.
        item = pb.ExtractItem(image=pb.Image(data=photo))
        return await self._extract([item], wanted, no_face_ok=True)

    async def _extract(
        self,
        items: list[pb.ExtractItem],
        wanted: Wanted,
        param: str = "photo",
        *,
        no_face_ok: bool = False,
    ) -> Extracted:
        request = pb.ExtractRequest(
            items=items,
            facen=True,
            gender=wanted.gender,
            age=wanted.age,
            emotions=wanted.emotions,
            normalized=wanted.normalized,
        )
        response = await self._call("Extract", request)
        assert isinstance(response, pb.ExtractResponse)
        faces = []
        for result in response.results:
            if result.error.code == "NO_FACE" and no_face_ok:
                continue
            if result.error.code:
                raise _item_error(result.error, param)
            attributes = None
            if wanted.attributes:
                a = result.attributes
                attributes = Attributes(
                    gender=a.gender if wanted.gender else None,
                    gender_confidence=a.gender_confidence,
                    age=a.age if wanted.age else None,
                    emotions=tuple((e.emotion, e.confidence) for e in a.emotions)
                    if wanted.emotions
                    else None,
                )
            faces.append(
                Extraction(
                    _box(result.bbox), result.facen, result.quality, attributes, result.normalized
                )
            )
        return Extracted(f"{response.model}@{response.model_version}", faces)
