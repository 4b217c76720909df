"""A video worker's settings (FACEGRID_VIDEO_*); the only module that reads them."""

from __future__ import annotations

from pydantic import Field

from facegrid.settings import HostPort, OptionalHostPort, ServiceSettings


class VideoSettings(ServiceSettings):
    section = "video"

    # The seed's fkvideo_detector options: api-host/api-port, api-token, detector-name.
    api_url: str = Field("http://127.0.0.1:8000", description="FaceGrid REST API base URL")
    api_token: str = Field("", description="API token the worker posts faces with")
    detector_name: str = Field(
        "default", min_length=1, description="which cameras to take: those of this detector"
    )
    controlplane: HostPort = Field("127.0.0.1:50050", description="ControlPlane gRPC address")
    metrics_listen: OptionalHostPort = Field(
        "127.0.0.1:9108", description="HTTP address for /metrics; empty to disable"
    )
    poll_interval: float = Field(
        5.0, gt=0, le=300, description="seconds between looks at the camera assignment"
    )
