"""The indexer shard's settings (FACEGRID_INDEXER_*); the only module that reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from facegrid.settings import HostPort, LicensedSettings, OptionalHostPort


class IndexerSettings(LicensedSettings):
    section = "indexer"

    listen: HostPort = Field("127.0.0.1:33001", description="gRPC address to serve on")
    metrics_listen: OptionalHostPort = Field(
        "127.0.0.1:34001", description="HTTP address for /metrics; empty to disable"
    )
    http_listen: OptionalHostPort = Field(
        "127.0.0.1:35001",
        description="HTTP address for the seed's shard API (/v1/:gallery/...); empty to disable",
    )
    data_dir: Path = Field(description="where the shard keeps its write-ahead log")
    shard_name: str = Field("shard-0", min_length=1, description="this shard's name in placements")
    # Measured at 1M face-like vectors on huge pages (bench/indexer_facelike.py --m 24
    # --ef-construction 200 --ef 180 200 220): at ef 200, recall of above-threshold matches
    # 0.9988, recall@10 0.992, p50 1.3 ms and p99 1.8 ms on one thread, 961 bytes per face,
    # 1,330 faces/s into the graph. M=20 (ef 200, small pages): recall@10 0.989, p99 1.9 ms;
    # M=16 with ef_construction 300 and ef_search 160: 0.994, 0.973, p99 1.0 ms.
    hnsw_m: int = Field(24, ge=2, le=128, description="HNSW graph degree (M)")
    hnsw_ef_construction: int = Field(200, ge=8, description="HNSW build-time candidate list")
    hnsw_ef_search: int = Field(200, ge=1, description="HNSW search-time candidate list")
    fsync: bool = Field(True, description="fsync every write before acknowledging it")
    huge_pages: bool = Field(
        True,
        description="back the graphs with transparent huge pages (glibc.malloc.hugetlb=1; the "
        "indexer re-executes itself once with it set): faster searches of large galleries",
    )
    snapshot_every: int = Field(
        100_000,
        ge=0,
        description="take a snapshot after this many logged writes (0: only when asked)",
    )
    build_graph_min: int = Field(
        10_000,
        ge=0,
        description="galleries smaller than this are searched exactly, without an HNSW graph",
    )
    max_batch: int = Field(10_000, ge=1, description="most vectors one Add call may carry")
    role: Literal["primary", "follower"] = Field(
        "primary", description="primary takes writes; a follower tails its primary's log"
    )
    primary: str = Field(
        "",
        description="a follower's primary, host:port of its gRPC address; `{ordinal}` in it "
        "is the number ending shard_name (a StatefulSet pod's ordinal)",
    )

    @model_validator(mode="after")
    def _follower_needs_primary(self) -> IndexerSettings:
        if self.role == "follower" and not self.primary:
            raise ValueError("a follower needs `primary` (the primary shard's host:port)")
        if "{ordinal}" in self.primary:
            stem, _, ordinal = self.shard_name.rpartition("-")
            if not stem or not ordinal.isdigit():
                raise ValueError(
                    f"`primary` has {{ordinal}} but shard_name {self.shard_name!r} does not end "
                    "in -N"
                )
            object.__setattr__(self, "primary", self.primary.replace("{ordinal}", ordinal))
        return self
