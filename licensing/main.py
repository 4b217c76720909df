"""`facegrid-licensing`: the license server (the seed's NTLS).

gRPC for the components (limits, leases, heartbeats), HTTP on `ui` for people and downstream
license servers (license.json, the upload page, the licence file), and a loop that reads the
licence source: the `license_dir` folder (offline), the `upstream` server (online), or nothing
(community mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import REGISTRY, CollectorRegistry

from facegrid import grpcserver, httpserver
from facegrid.entrypoint import run_service
from facegrid.licensing import http_api, signing, sources
from facegrid.licensing.core import LicenseServer
from facegrid.licensing.servicer import LicensingServicer
from facegrid.licensing.settings import LicensingSettings
from facegrid.v1 import licensing_pb2, licensing_pb2_grpc

log = logging.getLogger(__name__)


def build(
    settings: LicensingSettings, registry: CollectorRegistry = REGISTRY
) -> grpcserver.GrpcService:
    try:
        pem = settings.public_key.read_bytes() if settings.public_key else sources.VENDOR_PUBLIC_KEY
        key = signing.public_key(pem)
    except (OSError, ValueError) as e:
        raise SystemExit(f"facegrid-licensing: cannot use the public key: {e}") from None
    folder = settings.license_dir
    installation = settings.installation or sources.installation_id(folder)
    token = settings.admin_token or sources.admin_token(folder)
    mode = "online" if settings.upstream else "community"
    server = LicenseServer(heartbeat_interval=settings.heartbeat_interval, mode=mode)
    if settings.upstream:
        source = sources.follow_upstream(
            server,
            key,
            installation,
            settings.upstream,
            settings.refresh_interval,
            settings.proxy,
        )
    elif folder is not None:
        sources.read_once(server, key, installation, folder)
        source = sources.watch_folder(server, key, installation, folder, settings.refresh_interval)
    else:
        source = None
    app = http_api.create_app(server, key, installation, folder, token)
    start_http, stop_http = httpserver.embedded(app, settings.ui, "licensing UI")
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        await start_http()
        if source is not None:
            tasks.append(asyncio.create_task(source))
        log.info("installation %s, licence mode %s", installation, server.mode)

    async def stop() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await stop_http()

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
        on_start=[start],
        on_stop=[stop],
    )


async def serve(settings: LicensingSettings) -> None:
    await grpcserver.serve(build(settings))


def main(argv: list[str] | None = None) -> None:
    run_service(
        "facegrid-licensing",
        "Serve the FaceGrid licence, its limits and leases (gRPC) and license.json (HTTP).",
        LicensingSettings,
        serve,
        argv,
    )
