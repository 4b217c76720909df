"""`facegrid-extractor`: serve detection and face vectors over gRPC."""

from __future__ import annotations

import onnxruntime
from prometheus_client import REGISTRY, CollectorRegistry

from facegrid import grpcserver
from facegrid.entrypoint import run_service
from facegrid.extractor.core import BadBundle, Bundle, Extractor
from facegrid.extractor.servicer import ExtractorServicer
from facegrid.extractor.settings import ExtractorSettings
from facegrid.settings import ConfigError, exit_on_config_error
from facegrid.v1 import extractor_pb2, extractor_pb2_grpc


def build(
    settings: ExtractorSettings, registry: CollectorRegistry = REGISTRY
) -> grpcserver.GrpcService:
    bundle = Bundle.load(settings.model_dir) if settings.model_dir else None
    extractor = Extractor(bundle, list(onnxruntime.get_available_providers()))
    return grpcserver.GrpcService(
        name="extractor",
        listen=settings.listen,
        metrics_listen=settings.metrics_listen,
        registrations=[
            grpcserver.Registration(
                extractor_pb2_grpc.add_ExtractorServicer_to_server,
                ExtractorServicer(extractor),
                extractor_pb2.DESCRIPTOR.services_by_name["Extractor"].full_name,
            )
        ],
        registry=registry,
    )


async def serve(settings: ExtractorSettings) -> None:
    try:
        service = build(settings)
    except BadBundle as e:
        # A broken bundle is a configuration error: stop with the reason, not a traceback.
        exit_on_config_error(
            "facegrid-extractor", ConfigError(f"FACEGRID_EXTRACTOR_MODEL_DIR: {e}")
        )
        return
    await grpcserver.serve(service)


def main(argv: list[str] | None = None) -> None:
    run_service(
        "facegrid-extractor",
        "Serve FaceGrid face detection and face vectors over gRPC.",
        ExtractorSettings,
        serve,
        argv,
    )
