"""The shard's own Prometheus metrics, read from the shard at scrape time.

Request counts and latencies come from the shared gRPC interceptor; this adds what only the
shard knows: vectors per gallery, the log position and size, and the last snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from facegrid.indexer.core import Shard
from facegrid.indexer.replica import ReplicationState


class ShardCollector(Collector):
    def __init__(self, shard: Shard, state: ReplicationState) -> None:
        self._shard = shard
        self._state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._shard.stats()
        vectors = GaugeMetricFamily(
            "facegrid_indexer_vectors", "Vectors held, per gallery.", labels=["shard", "gallery"]
        )
        for gallery in stats.galleries:
            vectors.add_metric([stats.name, gallery.name], gallery.count)
        yield vectors
        yield _gauge(
            "facegrid_indexer_lsn", "Log sequence number of the last write.", stats.name, stats.lsn
        )
        yield _gauge(
            "facegrid_indexer_snapshot_lsn",
            "Log sequence number of the last snapshot.",
            stats.name,
            self._shard.snapshot_lsn,
        )
        yield _gauge(
            "facegrid_indexer_wal_bytes",
            "Size of the write-ahead log.",
            stats.name,
            self._shard.wal_bytes,
        )
        for field, documentation in (
            ("indexed", "Vectors in the HNSW graph, per gallery."),
            ("unindexed", "Vectors searched exactly until the builder indexes them."),
            ("deleted", "Deleted places in the graph not yet reclaimed."),
        ):
            family = GaugeMetricFamily(
                f"facegrid_indexer_{field}_vectors", documentation, labels=["shard", "gallery"]
            )
            for gallery in stats.galleries:
                family.add_metric([stats.name, gallery.name], getattr(gallery, field))
            yield family
        yield _gauge(
            "facegrid_indexer_replication_lag_records",
            "Records the follower is behind its primary (0 on a primary).",
            stats.name,
            self._state.lag(stats.lsn),
        )
        yield _gauge(
            "facegrid_indexer_replication_lag_seconds",
            "How long the follower has been behind its primary (0 when caught up).",
            stats.name,
            self._state.lag_seconds(stats.lsn),
        )


def _gauge(name: str, documentation: str, shard: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["shard"])
    family.add_metric([shard], value)
    return family


def register(shard: Shard, state: ReplicationState, registry: CollectorRegistry) -> None:
    registry.register(ShardCollector(shard, state))
