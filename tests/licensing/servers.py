"""Helpers for tests that need a vendor key pair and a running license server."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from facegrid import grpcserver
from facegrid.licensing import main as licensing_main
from facegrid.licensing import signing
from facegrid.licensing.core import Licence
from facegrid.licensing.settings import LicensingSettings
from facegrid.v1 import licensing_pb2_grpc
from tests.conftest import free_port

INSTALLATION = "inst-0001"


@dataclass
class Vendor:
    private: Ed25519PrivateKey
    public_pem: Path

    def licence(self, **fields: object) -> bytes:
        values: dict[str, object] = {
            "license_id": "lic-1",
            "customer": "ACME",
            "generated": time.time() - 60,
            "installation": INSTALLATION,
            "limits": {"faces": 1000, "cameras": 2, "extractors": 1},
        }
        values.update(fields)
        return signing.issue(self.private, Licence(**values))  # type: ignore[arg-type]


def new_vendor(folder: Path) -> Vendor:
    """A vendor key pair; the public key written to folder (the `public_key` setting)."""
    private_pem, public_pem = signing.new_key_pair()
    path = folder / "vendor.pub.pem"
    path.write_bytes(public_pem)
    return Vendor(signing.private_key(private_pem), path)


@dataclass
class Running:
    stub: licensing_pb2_grpc.LicensingStub
    ui: str
    folder: Path | None
    # Its gRPC address.
    address: str


@contextlib.asynccontextmanager
async def running(
    vendor: Vendor,
    folder: Path | None,
    upstream: str = "",
    ui_port: int | None = None,
    grpc_port: int | None = None,
    proxy: str = "",
) -> AsyncIterator[Running]:
    """A license server trusting vendor's key, on loopback (fixed ports to restart it)."""
    ui = f"127.0.0.1:{ui_port or free_port()}"
    settings = LicensingSettings(
        listen=f"127.0.0.1:{grpc_port or free_port()}",
        metrics_listen=None,
        ui=ui,
        license_dir=folder,
        upstream=upstream,
        proxy=proxy,
        public_key=vendor.public_pem,
        installation=INSTALLATION,
        admin_token="admin-secret",
        refresh_interval=0.1,
        heartbeat_interval=10,
    )
    service = licensing_main.build(settings, CollectorRegistry())
    server, _, port = await grpcserver.start(service)
    for hook in service.on_start:
        await hook()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Running(
                licensing_pb2_grpc.LicensingStub(channel),
                f"http://{ui}",
                folder,
                f"127.0.0.1:{port}",
            )
    finally:
        await server.stop(None)
        for hook in service.on_stop:
            await hook()
