"""The Kubernetes operator's settings (FACEGRID_OPERATOR_*); the only module that reads them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from facegrid.settings import HostPort, OptionalHostPort, ServiceSettings


class OperatorSettings(ServiceSettings):
    section = "operator"

    namespace: str = Field(
        "default", min_length=1, description="namespace whose resources the operator manages"
    )
    listen: HostPort = Field(
        "0.0.0.0:50050", description="gRPC address the operator serves ControlPlane on"
    )
    metrics_listen: OptionalHostPort = Field(
        "0.0.0.0:51050", description="HTTP address for /metrics; empty to disable"
    )
    indexer_statefulset: str = Field(
        "facegrid-indexer", description="the index shards' StatefulSet (shard i is its pod i)"
    )
    indexer_service: str = Field(
        "facegrid-indexer", description="the headless Service giving the shard pods DNS names"
    )
    indexer_port: int = Field(33001, ge=1, le=65535, description="the shards' gRPC port")
    indexer_followers: int = Field(
        0,
        ge=0,
        le=8,
        description="follower StatefulSets deployed (<indexer_statefulset>-r1 .. -rN, pod i "
        "following primary i); a gallery's replicasPerShard uses up to this many",
    )
    shard_address: str = Field(
        "{pod}.{service}:{port}",
        description="how to reach shard pod i: {pod}, {service}, {namespace} and {port}, "
        "which is indexer_port + i x indexer_port_stride",
    )
    indexer_port_stride: int = Field(
        0, ge=0, description="0 in a cluster; on one host, shard i listens on port + i x stride"
    )
    default_shards: int = Field(
        0,
        ge=0,
        le=1024,
        description="shards of a gallery created through the REST API; 0: every indexer pod",
    )
    video_template: Path = Field(
        Path("/etc/facegrid/operator/video-worker.yaml"),
        description="the video worker Deployment template and pool sizes (YAML)",
    )
    settle_seconds: float = Field(
        5.0,
        ge=0,
        description="wait after publishing a placement before relying on every gateway having it",
    )
    stats_interval: float = Field(
        30.0, gt=0, description="seconds between face counts and shard health checks"
    )
    peering: str = Field("facegrid", description="the KopfPeering that keeps one operator active")
