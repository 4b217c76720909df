"""Licensing over gRPC: wire messages to LicenseServer calls and back."""

from __future__ import annotations

import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from facegrid.grpcserver import Context
from facegrid.licensing.core import RESOURCES, LicenseServer, UnknownResource
from facegrid.v1 import licensing_pb2 as pb
from facegrid.v1 import licensing_pb2_grpc


class LicensingServicer(licensing_pb2_grpc.LicensingServicer):
    def __init__(self, server: LicenseServer) -> None:
        self._server = server

    async def Check(self, request: pb.CheckRequest, context: Context) -> pb.CheckResponse:
        try:
            decision = self._server.check(
                request.resource, request.amount, request.in_use if request.in_use else None
            )
        except UnknownResource as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return pb.CheckResponse(
            allowed=decision.allowed, reason=decision.reason, limit=decision.limit
        )

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        if not request.component or not request.instance:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "component and instance are required"
            )
        valid = self._server.heartbeat(request.component, request.instance, dict(request.usage))
        return pb.HeartbeatResponse(valid=valid, interval_seconds=self._server.heartbeat_interval)

    async def GetInfo(self, request: pb.InfoRequest, context: Context) -> pb.LicenseInfo:
        license = self._server.license
        valid, reason = license.valid(time.time())
        info = pb.LicenseInfo(
            license_id=license.license_id,
            licensee=license.licensee,
            valid=valid,
            reason=reason,
            features=license.features,
            limits=[
                pb.LicenseLimit(
                    resource=r, limit=license.limits.get(r, 0), in_use=self._server.in_use(r)
                )
                for r in RESOURCES
            ],
        )
        if license.expires_at is not None:
            info.expires_at.CopyFrom(Timestamp(seconds=int(license.expires_at)))
        return info
