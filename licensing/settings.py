"""The licensing service's settings (FACEGRID_LICENSING_*); the only module that reads them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from facegrid.settings import HostPort, OptionalHostPort, ProxyUrl, ServiceSettings


class LicensingSettings(ServiceSettings):
    section = "licensing"

    # 3133 is the port the seed's NTLS licence server listens on.
    listen: HostPort = Field("127.0.0.1:3133", description="gRPC address to serve on")
    metrics_listen: OptionalHostPort = Field(
        "127.0.0.1:4133", description="HTTP address for /metrics; empty to disable"
    )
    # The seed's NTLS `ui` setting (its web interface on 3185). 0.0.0.0:3185 opens it to other
    # hosts, as the seed's default does; uploading needs the admin token either way.
    ui: HostPort = Field(
        "127.0.0.1:3185",
        description="HTTP address of license.json, the licence file and the upload page",
    )
    # The seed's NTLS `license-dir`.
    license_dir: Path | None = Field(
        None,
        description="folder of licence files (the newest *.lic is used); none: community mode",
    )
    upstream: str = Field(
        "",
        description="URL of an upstream license server to take the licence from (online mode)",
    )
    # The seed's NTLS `proxy`.
    proxy: ProxyUrl = Field(
        "", description="an HTTP proxy (http://host:port) to reach the upstream license server"
    )
    public_key: Path | None = Field(
        None, description="PEM file of the vendor public key to trust; none: FaceGrid's own"
    )
    installation: str = Field(
        "",
        description="this installation's id; none: kept in license-dir/installation, made once",
    )
    admin_token: str = Field(
        "",
        description="token for the upload page; none: kept in license-dir/admin-token, made once",
    )
    refresh_interval: float = Field(
        2.0, gt=0, le=60, description="seconds between reads of the licence source"
    )
    heartbeat_interval: int = Field(
        10, ge=1, le=3600, description="seconds between the heartbeats components must send"
    )
