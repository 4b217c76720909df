"""Extractor over gRPC: wire messages to the extraction core and back.

Inference runs in worker threads (onnxruntime releases the GIL), so the event loop keeps
answering health checks while a batch is computed. Errors of one item travel in that item's
`error`; only a malformed batch as a whole fails the call.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from facegrid.extractor.core import Extractor, NoModels
from facegrid.extractor.core.extraction import (
    BatchError,
    Box,
    Extracted,
    Extraction,
    ExtractItem,
    PhotoDetections,
    Wanted,
)
from facegrid.grpcserver import Context
from facegrid.licence import LicenceClient, LicenceRefused
from facegrid.v1 import extractor_pb2 as pb
from facegrid.v1 import extractor_pb2_grpc


def _box(message: pb.BBox) -> Box | None:
    box = (message.x1, message.y1, message.x2, message.y2)
    return box if any(box) else None


def _wire_box(box: Box) -> pb.BBox:
    return pb.BBox(x1=box[0], y1=box[1], x2=box[2], y2=box[3])


def _detections(result: PhotoDetections) -> pb.ImageDetections:
    if result.error is not None:
        return pb.ImageDetections(
            error=pb.ItemError(code=result.error.code, reason=result.error.reason)
        )
    return pb.ImageDetections(
        width=result.width,
        height=result.height,
        orientation=result.orientation,
        faces=[
            pb.DetectedFace(
                bbox=_wire_box(face.box),
                score=face.score,
                landmarks=[pb.Point(x=float(x), y=float(y)) for x, y in face.landmarks],
                quality=face.quality,
            )
            for face in result.faces
        ],
    )


def _extracted(result: Extracted) -> pb.ExtractResult:
    if result.error is not None:
        return pb.ExtractResult(
            error=pb.ItemError(code=result.error.code, reason=result.error.reason)
        )
    message = pb.ExtractResult(quality=result.quality, normalized=result.normalized)
    if result.facen is not None:
        message.facen = result.facen.astype("<f4").tobytes()
    if result.box is not None:
        message.bbox.CopyFrom(_wire_box(result.box))
    if result.attributes is not None:
        a = result.attributes
        attributes = message.attributes
        if a.gender is not None:
            attributes.gender = a.gender
            attributes.gender_confidence = a.gender_confidence
        if a.age is not None:
            attributes.age = a.age
        for emotion, confidence in a.emotions or []:
            attributes.emotions.add(emotion=emotion, confidence=confidence)
    return message


class ExtractorServicer(extractor_pb2_grpc.ExtractorServicer):
    def __init__(
        self,
        extractor: Extractor,
        extraction: Extraction | None,
        licence: LicenceClient | None = None,
    ) -> None:
        self._extractor = extractor
        self._extraction = extraction
        # No licence client: community mode (everything on).
        self._licence = licence or LicenceClient(None, "extractor", "")

    async def _licensed(self, context: Context, *features: str) -> None:
        """Aborts with PERMISSION_DENIED unless the licence allows the work and features."""
        try:
            self._licence.check()
            for feature in features:
                self._licence.require(feature)
        except LicenceRefused as e:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))

    async def _require(self, context: Context) -> Extraction:
        if self._extractor.unavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, self._extractor.unavailable)
        try:
            self._extractor.require_models()
        except NoModels as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        assert self._extraction is not None
        return self._extraction

    async def Detect(self, request: pb.DetectRequest, context: Context) -> pb.DetectResponse:
        extraction = await self._require(context)
        await self._licensed(context)
        roi = _box(request.roi) if request.HasField("roi") else None
        try:
            results = await asyncio.to_thread(
                extraction.detect,
                [image.data for image in request.images],
                request.min_face_size,
                request.max_face_size,
                roi,
                request.auto_rotate,
            )
        except BatchError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return pb.DetectResponse(results=[_detections(r) for r in results])

    async def Extract(self, request: pb.ExtractRequest, context: Context) -> pb.ExtractResponse:
        extraction = await self._require(context)
        items = []
        for item in request.items:
            landmarks = None
            if len(item.landmarks) == 5:
                landmarks = np.array([[p.x, p.y] for p in item.landmarks], np.float32)
            box = _box(item.bbox) if item.HasField("bbox") else None
            items.append(ExtractItem(item.image.data, box, landmarks, item.prenormalized))
        wanted = Wanted(
            facen=request.facen,
            gender=request.gender,
            age=request.age,
            emotions=request.emotions,
            normalized=request.normalized,
        )
        await self._licensed(
            context, *(f for f in ("gender", "age", "emotions") if getattr(wanted, f))
        )
        try:
            results = await asyncio.to_thread(extraction.extract, items, wanted)
        except BatchError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        engine = extraction.engine
        return pb.ExtractResponse(
            model=engine.facen_model,
            model_version=engine.version,
            facen_size=engine.facen_size,
            results=[_extracted(r) for r in results],
        )

    async def GetModelInfo(
        self, request: pb.ModelInfoRequest, context: Context
    ) -> pb.ModelInfoResponse:
        bundle = self._extractor.bundle
        response = pb.ModelInfoResponse(providers=self._extractor.providers)
        if bundle is not None:
            response.bundle_version = bundle.version
            response.facen_size = bundle.facen_size
            response.models.extend(
                pb.ModelInfo(name=m.name, version=m.version, task=m.task, sha256=m.sha256)
                for m in bundle.models
            )
        return response
