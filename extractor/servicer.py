"""Extractor over gRPC: wire messages to the extractor core and back."""

from __future__ import annotations

import grpc

from facegrid.extractor.core import Extractor, NoModels
from facegrid.grpcserver import Context
from facegrid.v1 import extractor_pb2 as pb
from facegrid.v1 import extractor_pb2_grpc


class ExtractorServicer(extractor_pb2_grpc.ExtractorServicer):
    def __init__(self, extractor: Extractor) -> None:
        self._extractor = extractor

    async def Detect(self, request: pb.DetectRequest, context: Context) -> pb.DetectResponse:
        try:
            self._extractor.require_models()
        except NoModels as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "detection models are not wired yet")

    async def Extract(self, request: pb.ExtractRequest, context: Context) -> pb.ExtractResponse:
        try:
            self._extractor.require_models()
        except NoModels as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "facen models are not wired yet")

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
