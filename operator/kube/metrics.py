"""The operator's Prometheus metrics: what it manages, and how a reshard is going."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.faces = Gauge(
            "facegrid_operator_gallery_faces",
            "Faces in a gallery, summed over its shards (last count).",
            ["gallery"],
            registry=registry,
        )
        self.live_shards = Gauge(
            "facegrid_operator_gallery_live_shards",
            "Shards of a gallery that answered the last count.",
            ["gallery"],
            registry=registry,
        )
        self.reshard_slots = Gauge(
            "facegrid_operator_reshard_slots_remaining",
            "Slots of a gallery still to be copied by the reshard under way (0 when none).",
            ["gallery"],
            registry=registry,
        )
        self.faces_moved = Counter(
            "facegrid_operator_reshard_faces_copied",
            "Faces copied between shards by reshards.",
            ["gallery"],
            registry=registry,
        )
        self.workers = Gauge(
            "facegrid_operator_pool_workers",
            "Worker pods a detector pool asks for: ceil(cameras / detectors-max).",
            ["pool"],
            registry=registry,
        )
        self.waiting = Gauge(
            "facegrid_operator_pool_cameras_waiting",
            "Streaming cameras of a pool with no worker pod yet.",
            ["pool"],
            registry=registry,
        )
