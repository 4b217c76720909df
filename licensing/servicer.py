"""Licensing over gRPC: wire messages to LicenseServer calls and back."""

from __future__ import annotations

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
            allowed=decision.allowed,
            reason=decision.reason,
            limit=decision.limit or 0,
            unlimited=decision.limit is None,
        )

    async def Acquire(self, request: pb.AcquireRequest, context: Context) -> pb.AcquireResponse:
        if not request.holder:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "holder is required")
        try:
            decision = self._server.acquire(request.resource, request.holder, request.count or 1)
        except UnknownResource as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return pb.AcquireResponse(
            granted=decision.allowed,
            reason=decision.reason,
            lease_id=decision.lease_id,
            limit=decision.limit or 0,
            unlimited=decision.limit is None,
        )

    async def Release(self, request: pb.ReleaseRequest, context: Context) -> pb.ReleaseResponse:
        return pb.ReleaseResponse(released=self._server.release(request.lease_id))

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        if not request.component or not request.instance:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "component and instance are required"
            )
        valid = self._server.heartbeat(
            request.component, request.instance, dict(request.usage), request.address
        )
        return pb.HeartbeatResponse(
            valid=valid,
            interval_seconds=self._server.heartbeat_interval,
            leases=self._server.leases_of(request.instance),
        )

    async def GetInfo(self, request: pb.InfoRequest, context: Context) -> pb.LicenseInfo:
        server = self._server
        licence = server.licence
        valid, reason = server.validity()
        limits = []
        for resource in RESOURCES:
            limit = server.limit(resource)
            limits.append(
                pb.LicenseLimit(
                    resource=resource,
                    limit=limit or 0,
                    unlimited=limit is None,
                    in_use=server.in_use(resource),
                )
            )
        info = pb.LicenseInfo(
            license_id=licence.license_id if licence else "",
            licensee=licence.customer if licence else "",
            valid=valid,
            reason=reason,
            features=sorted(server.features()),
            limits=limits,
            type=server.mode,
            last_updated_seconds=int(server.last_updated()),
        )
        if licence is not None and licence.expires is not None:
            info.expires_at.CopyFrom(Timestamp(seconds=int(licence.expires)))
        return info
