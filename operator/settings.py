"""The Kubernetes operator's settings (FACEGRID_OPERATOR_*); the only module that reads them."""

from __future__ import annotations

from pydantic import Field

from facegrid.settings import HostPort, ServiceSettings


class OperatorSettings(ServiceSettings):
    section = "operator"

    namespace: str = Field("", description="namespace to watch; empty for the whole cluster")
    listen: HostPort = Field(
        "0.0.0.0:50050", description="gRPC address the operator serves ControlPlane on"
    )
