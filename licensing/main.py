"""`facegrid-licensing`: serve the licence and its limits over gRPC."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry

from facegrid import grpcserver
from facegrid.entrypoint import run_service
from facegrid.licensing.core import License, LicenseServer
from facegrid.licensing.servicer import LicensingServicer
from facegrid.licensing.settings import LicensingSettings
from facegrid.v1 import licensing_pb2, licensing_pb2_grpc


def build(
    settings: LicensingSettings, registry: CollectorRegistry = REGISTRY
) -> grpcserver.GrpcService:
    server = LicenseServer(License(), settings.heartbeat_interval)
    return grpcserver.GrpcService(
        name="licensing",
        listen=settings.listen,
        metrics_listen=settings.metrics_listen,
        registrations=[
            grpcserver.Registration(
                licensing_pb2_grpc.add_LicensingServicer_to_server,
                LicensingServicer(server),
                licensing_pb2.DESCRIPTOR.services_by_name["Licensing"].full_name,
            )
        ],
        registry=registry,
    )


async def serve(settings: LicensingSettings) -> None:
    await grpcserver.serve(build(settings))


def main(argv: list[str] | None = None) -> None:
    run_service(
        "facegrid-licensing",
        "Serve the FaceGrid licence and its limits over gRPC.",
        LicensingSettings,
        serve,
        argv,
    )
