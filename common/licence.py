"""A component's side of licensing: heartbeats to the license server and the licence it last
heard, with a grace period.

Every licensable component (gateway, extractor, index shard, video worker) runs a
`LicenceClient`. It heartbeats every interval the license server asks for (reporting what the
component counts and keeping its leases), and keeps the licence info of the last answer. When
the license server is unreachable the component keeps working on that licence for `grace`
seconds, then refuses new work with a clear error; before the first answer it works for `grace`
seconds from its start. Without a license server configured, the community limits apply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from facegrid.licence_terms import COMMUNITY_LIMITS
from facegrid.v1 import licensing_pb2 as pb
from facegrid.v1 import licensing_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_GRACE = 300.0
CALL_TIMEOUT = 5.0

Usage = Callable[[], Awaitable[dict[str, int]]]


class LicenceRefused(Exception):
    """The licence does not allow this (a feature, a limit, or no valid licence); the message
    says why."""


@dataclass(frozen=True)
class Lease:
    granted: bool
    lease_id: str = ""
    reason: str = ""


class LicenceClient:
    """channel: to the license server (None: community mode, no server); usage: what the
    component counts, sent in heartbeats; hold: leased resources it needs one unit of."""

    def __init__(
        self,
        channel: grpc.aio.Channel | None,
        component: str,
        instance: str,
        *,
        address: str = "",
        usage: Usage | None = None,
        hold: tuple[str, ...] = (),
        grace: float = DEFAULT_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = channel
        self._stub = licensing_pb2_grpc.LicensingStub(channel) if channel is not None else None
        self._task: asyncio.Task[None] | None = None
        self._component = component
        self.instance = instance
        self._address = address
        self._usage = usage
        self._grace = grace
        self._clock = clock
        self._info: pb.LicenseInfo | None = None
        self._heard_at = clock()  # the start opens the first grace period
        self._interval = 10.0
        self._warned = False
        # Leased resources this component needs one unit of to work (an extractor instance),
        # and the lease it holds or was refused.
        self._hold = hold
        self._leases: dict[str, Lease] = {}

    async def refresh(self) -> None:
        """One heartbeat and a fresh look at the licence; raises grpc.aio.AioRpcError."""
        if self._stub is None:
            return
        usage = await self._usage() if self._usage is not None else {}
        beat = await self._stub.Heartbeat(
            pb.HeartbeatRequest(
                component=self._component,
                instance=self.instance,
                usage=usage,
                address=self._address,
            ),
            timeout=CALL_TIMEOUT,
        )
        for resource in self._hold:
            lease = self._leases.get(resource)
            if lease is None or lease.lease_id not in beat.leases:  # none yet, or forgotten
                self._leases[resource] = await self.acquire(resource)
        self._info = await self._stub.GetInfo(pb.InfoRequest(), timeout=CALL_TIMEOUT)
        self._heard_at = self._clock()
        self._interval = float(beat.interval_seconds or 10)
        self._warned = False

    async def run(self) -> None:
        """Heartbeat until cancelled."""
        while self._stub is not None:
            try:
                await self.refresh()
            except grpc.aio.AioRpcError as e:
                if not self._warned:
                    log.warning("the license server does not answer (%s)", e.details())
                    self._warned = True
            await asyncio.sleep(self._interval)

    async def start(self) -> None:
        """Start heartbeating in the background (a service's start hook)."""
        if self._stub is not None and self._task is None:
            self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        """Stop heartbeating and close the channel (a service's stop hook)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._channel is not None:
            await self._channel.close()

    def problem(self) -> str:
        """Why no new work may be done now; "" when it may."""
        if self._stub is None:
            return ""
        silent = self._clock() - self._heard_at
        if silent > self._grace:
            return (
                f"the license server has not answered for {silent:.0f} s "
                f"(grace period {self._grace:.0f} s)"
            )
        if self._info is not None and not self._info.valid:
            return f"no valid licence: {self._info.reason}"
        for resource in self._hold:
            lease = self._leases.get(resource)
            if lease is not None and not lease.granted:
                return lease.reason
        return ""

    def check(self) -> None:
        problem = self.problem()
        if problem:
            raise LicenceRefused(problem)

    def has(self, feature: str) -> bool:
        if self.problem():
            return False
        return self._info is None or feature in self._info.features

    def require(self, feature: str) -> None:
        """Raises LicenceRefused unless the licence includes feature."""
        self.check()
        if not self.has(feature):
            raise LicenceRefused(f"the licence does not include {feature}")

    def limit(self, resource: str) -> int | None:
        """How many of resource the licence allows; None: unlimited."""
        if self._info is None:
            return COMMUNITY_LIMITS.get(resource)
        for entry in self._info.limits:
            if entry.resource == resource:
                return None if entry.unlimited else int(entry.limit)
        return None

    async def acquire(self, resource: str, count: int = 1) -> Lease:
        """A lease on count units of a leased resource, kept while this client heartbeats."""
        if self._stub is None:
            return Lease(True)
        answer = await self._stub.Acquire(
            pb.AcquireRequest(resource=resource, holder=self.instance, count=count),
            timeout=CALL_TIMEOUT,
        )
        return Lease(answer.granted, answer.lease_id, answer.reason)

    async def release(self, lease: Lease) -> None:
        if self._stub is not None and lease.lease_id:
            await self._stub.Release(
                pb.ReleaseRequest(lease_id=lease.lease_id), timeout=CALL_TIMEOUT
            )
