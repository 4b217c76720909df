"""The video worker's Prometheus metrics, labelled by camera."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from facegrid.observability import LATENCY_BUCKETS


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str) -> Counter:
            return Counter(f"facegrid_video_{name}", doc, ["camera"], registry=registry)

        self.frames_in = counter("frames_in", "Frames read from the camera.")
        self.processed = counter("frames_processed", "Frames run through detection.")
        self.drops = counter("frames_dropped", "Frames dropped because processing fell behind.")
        self.posts = counter("posts", "Faces the API accepted.")
        self.post_errors = counter("post_errors", "Faces that could not be posted.")
        self.reconnects = counter("reconnects", "Times the camera was opened again.")
        self.sink_frames = counter("sink_frames", "Frames sent to the output stream (sink-url).")
        self.sink_drops = counter(
            "sink_frames_dropped",
            "Frames the output stream dropped: it fell behind, or its server was unreachable.",
        )
        self.sink_errors = counter(
            "sink_errors", "Times the output stream could not be opened or failed."
        )
        self.tracks = Gauge(
            "facegrid_video_active_tracks", "Faces tracked now.", ["camera"], registry=registry
        )
        self.latency = Histogram(
            "facegrid_video_post_latency_seconds",
            "From a frame's capture to the API accepting a face of it.",
            ["camera"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.cameras = Gauge(
            "facegrid_video_cameras", "Cameras this worker processes.", registry=registry
        )
        self.refused = Gauge(
            "facegrid_video_cameras_refused",
            "Cameras assigned but not processed (detectors-max or the licence).",
            registry=registry,
        )

    def camera(self, camera_id: str) -> CameraMetrics:
        return CameraMetrics(
            self.frames_in.labels(camera_id),
            self.processed.labels(camera_id),
            self.drops.labels(camera_id),
            self.posts.labels(camera_id),
            self.post_errors.labels(camera_id),
            self.reconnects.labels(camera_id),
            self.tracks.labels(camera_id),
            self.latency.labels(camera_id),
            self.sink_frames.labels(camera_id),
            self.sink_drops.labels(camera_id),
            self.sink_errors.labels(camera_id),
        )


@dataclass(frozen=True)
class CameraMetrics:
    frames_in: Counter
    processed: Counter
    drops: Counter
    posts: Counter
    post_errors: Counter
    reconnects: Counter
    tracks: Gauge
    latency: Histogram
    sink_frames: Counter
    sink_drops: Counter
    sink_errors: Counter
