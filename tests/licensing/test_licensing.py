"""Licensing: limits checked against usage that components report in heartbeats."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from facegrid import grpcserver
from facegrid.licensing import main as licensing_main
from facegrid.licensing.core import EVALUATION_LIMITS, License, LicenseServer
from facegrid.licensing.settings import LicensingSettings
from facegrid.v1 import licensing_pb2 as pb
from facegrid.v1 import licensing_pb2_grpc


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_check_counts_heartbeat_usage_until_it_goes_stale() -> None:
    clock = FakeClock()
    server = LicenseServer(License(limits={"cameras": 4}), heartbeat_interval=10, clock=clock)
    server.heartbeat("video", "worker-a", {"cameras": 3})
    assert server.check("cameras", 1).allowed
    refused = server.check("cameras", 2)
    assert not refused.allowed
    assert refused.limit == 4
    assert "3 in use" in refused.reason

    clock.now = 31.0  # three missed heartbeats: worker-a's cameras no longer count
    assert server.in_use("cameras") == 0
    assert server.check("cameras", 4).allowed


def test_caller_counted_usage_and_expiry() -> None:
    server = LicenseServer(License(limits={"faces": 10}), heartbeat_interval=10)
    assert not server.check("faces", 1, in_use=10).allowed
    expired = LicenseServer(License(expires_at=1.0), heartbeat_interval=10)
    decision = expired.check("faces", 1)
    assert not decision.allowed
    assert "expired" in decision.reason


@pytest.fixture
async def licensing(unused_port: int) -> AsyncIterator[licensing_pb2_grpc.LicensingStub]:
    settings = LicensingSettings(listen=f"127.0.0.1:{unused_port}", metrics_listen=None)
    server, _, port = await grpcserver.start(licensing_main.build(settings, CollectorRegistry()))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield licensing_pb2_grpc.LicensingStub(channel)
    await server.stop(None)


async def test_licensing_over_grpc(licensing: licensing_pb2_grpc.LicensingStub) -> None:
    info = await licensing.GetInfo(pb.InfoRequest())
    assert info.valid
    assert info.licensee == "evaluation"
    assert {lim.resource: lim.limit for lim in info.limits} == EVALUATION_LIMITS

    beat = await licensing.Heartbeat(
        pb.HeartbeatRequest(component="indexer", instance="shard-0", usage={"shards": 1})
    )
    assert beat.valid
    assert beat.interval_seconds == 30
    check = await licensing.Check(pb.CheckRequest(resource="shards", amount=4))
    assert not check.allowed
    assert check.limit == EVALUATION_LIMITS["shards"]

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await licensing.Check(pb.CheckRequest(resource="unicorns", amount=1))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await licensing.Heartbeat(pb.HeartbeatRequest(component="video"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
