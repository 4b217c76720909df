"""Calls spread over several extractors (facegrid.balancing), as the gateway and video workers
make them: real extractor servers on loopback, without models (GetModelInfo answers anyway)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from prometheus_client import CollectorRegistry

from facegrid import balancing, grpcserver
from facegrid.extractor import main as extractor_main
from facegrid.extractor.settings import ExtractorSettings
from facegrid.v1 import extractor_pb2 as pb
from facegrid.v1 import extractor_pb2_grpc
from tests.conftest import free_port


def _answered(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value(
        "facegrid_requests_total",
        {
            "service": "extractor",
            "protocol": "grpc",
            "method": "/facegrid.v1.Extractor/GetModelInfo",
            "outcome": "OK",
        },
    )
    return value or 0.0


def test_a_list_of_replicas_takes_ip_addresses_only() -> None:
    assert balancing.target("extractor-pods:18665") == "dns:///extractor-pods:18665"
    assert balancing.target("127.0.0.1:1, 127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    with pytest.raises(ValueError, match="IPv4"):
        balancing.target("a:1,b:2")
    with pytest.raises(ValueError, match="ip:port"):
        balancing.target("127.0.0.1:1,127.0.0.1")


async def test_calls_go_to_every_extractor_and_survive_one_stopping() -> None:
    registries = [CollectorRegistry() for _ in range(2)]
    servers = []
    addresses = []
    for registry in registries:
        settings = ExtractorSettings(listen=f"127.0.0.1:{free_port()}", metrics_listen=None)
        server, _, port = await grpcserver.start(extractor_main.build(settings, registry))
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
    try:
        async with balancing.channel(",".join(addresses)) as channel:
            stub = extractor_pb2_grpc.ExtractorStub(channel)
            # round_robin picks among the connections that are ready: until the second one is,
            # calls go to the first. Call until both have answered, then count.
            for _ in range(200):
                await stub.GetModelInfo(pb.ModelInfoRequest(), wait_for_ready=True, timeout=10)
                if all(_answered(r) for r in registries):
                    break
                await asyncio.sleep(0.02)
            before = [_answered(r) for r in registries]
            assert all(before)
            for _ in range(20):
                await stub.GetModelInfo(pb.ModelInfoRequest(), wait_for_ready=True, timeout=10)
            # Each ready extractor takes every other call.
            assert [_answered(r) - b for r, b in zip(registries, before, strict=True)] == [10, 10]

            await servers[0].stop(None)
            for _ in range(10):
                await stub.GetModelInfo(pb.ModelInfoRequest(), wait_for_ready=True, timeout=10)
            assert _answered(registries[1]) == before[1] + 20
    finally:
        for server in servers:
            await server.stop(None)


async def test_the_extractor_asks_clients_to_reconnect_after_max_connection_age() -> None:
    # Reconnecting is what makes a client resolve the name again and find new replicas.
    settings = ExtractorSettings(
        listen=f"127.0.0.1:{free_port()}", metrics_listen=None, max_connection_age=0.5
    )
    server, _, port = await grpcserver.start(extractor_main.build(settings, CollectorRegistry()))
    try:
        async with balancing.channel(f"127.0.0.1:{port}") as channel:
            stub = extractor_pb2_grpc.ExtractorStub(channel)
            await stub.GetModelInfo(pb.ModelInfoRequest(), timeout=10)
            states = []
            for _ in range(40):
                states.append(channel.get_state())
                await channel.wait_for_state_change(states[-1])
                if states[-1] != grpc.ChannelConnectivity.READY and len(states) > 1:
                    break
            assert grpc.ChannelConnectivity.READY in states
            assert states[-1] != grpc.ChannelConnectivity.READY  # the server closed it
            await stub.GetModelInfo(pb.ModelInfoRequest(), wait_for_ready=True, timeout=10)
    finally:
        await server.stop(None)
