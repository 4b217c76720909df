"""The extractor's settings (FACEGRID_EXTRACTOR_*); the only module that reads them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from facegrid.settings import HostPort, OptionalHostPort, ServiceSettings


class ExtractorSettings(ServiceSettings):
    section = "extractor"

    listen: HostPort = Field("127.0.0.1:18666", description="gRPC address to serve on")
    metrics_listen: OptionalHostPort = Field(
        "127.0.0.1:19666", description="HTTP address for /metrics; empty to disable"
    )
    model_dir: Path | None = Field(
        None, description="folder of the model bundle (manifest.json); unset serves no models"
    )
    max_batch: int = Field(64, ge=1, le=4096, description="largest batch sent to a model at once")
