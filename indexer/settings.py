"""The indexer shard's settings (FACEGRID_INDEXER_*); the only module that reads them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from facegrid.settings import HostPort, OptionalHostPort, ServiceSettings


class IndexerSettings(ServiceSettings):
    section = "indexer"

    listen: HostPort = Field("127.0.0.1:33001", description="gRPC address to serve on")
    metrics_listen: OptionalHostPort = Field(
        "127.0.0.1:34001", description="HTTP address for /metrics; empty to disable"
    )
    data_dir: Path = Field(description="where the shard keeps its write-ahead log")
    shard_name: str = Field("shard-0", min_length=1, description="this shard's name in placements")
    hnsw_m: int = Field(16, ge=2, le=128, description="HNSW graph degree (M)")
    hnsw_ef_construction: int = Field(200, ge=8, description="HNSW build-time candidate list")
    hnsw_ef_search: int = Field(64, ge=1, description="HNSW search-time candidate list")
    fsync: bool = Field(True, description="fsync every write before acknowledging it")
    snapshot_every: int = Field(
        100_000,
        ge=0,
        description="take a snapshot after this many logged writes (0: only when asked)",
    )
