"""The local control plane's settings (FACEGRID_CONTROLPLANE_*); the only module reading them."""

from __future__ import annotations

from pydantic import Field, field_validator

from facegrid.settings import CommaList, HostPort, OptionalHostPort, ServiceSettings


class ControlPlaneSettings(ServiceSettings):
    section = "controlplane"

    listen: HostPort = Field("127.0.0.1:50050", description="gRPC address to serve on")
    metrics_listen: OptionalHostPort = Field(
        "127.0.0.1:51050", description="HTTP address for /metrics; empty to disable"
    )
    mongo_uri: str = Field("mongodb://127.0.0.1:27017", description="MongoDB connection URI")
    mongo_db: str = Field("facegrid", min_length=1, description="MongoDB database name")
    shards: CommaList = Field(
        default_factory=lambda: ["shard-0=127.0.0.1:33001"],
        description="index shards as comma-separated NAME=HOST:PORT",
    )

    @field_validator("shards")
    @classmethod
    def _check_shards(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one shard is needed")
        names = []
        for entry in value:
            name, sep, address = entry.partition("=")
            if not sep or not name or ":" not in address:
                raise ValueError(f"expected NAME=HOST:PORT, got {entry!r}")
            names.append(name)
        if len(set(names)) != len(names):
            raise ValueError("shard names must be unique")
        return value
