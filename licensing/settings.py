"""The licensing service's settings (FACEGRID_LICENSING_*); the only module that reads them."""

from __future__ import annotations

from pydantic import Field

from facegrid.settings import HostPort, OptionalHostPort, ServiceSettings


class LicensingSettings(ServiceSettings):
    section = "licensing"

    # 3133 is the port the seed's NTLS licence server listens on.
    listen: HostPort = Field("127.0.0.1:3133", description="gRPC address to serve on")
    metrics_listen: OptionalHostPort = Field(
        "127.0.0.1:4133", description="HTTP address for /metrics; empty to disable"
    )
    heartbeat_interval: int = Field(
        30, ge=1, le=3600, description="seconds between the heartbeats components must send"
    )
