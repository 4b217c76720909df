"""gRPC channels that spread their calls over every replica of a service.

A gRPC channel keeps one HTTP/2 connection per address it resolves to, and the default policy
(pick_first) sends every call over the first. Behind a Kubernetes ClusterIP Service, or a single
address, all of a client's calls therefore reach one replica however many run: the extractor's
autoscaler would add pods that get no work. A balanced channel resolves the address to every
replica and sends calls to the ready ones in turn (round_robin):
- `host:port` is resolved through DNS; a headless Service resolves to every ready pod. The
  name is resolved again when a connection closes, and the extractor closes each client
  connection after `max_connection_age`, so clients find replicas started since.
- `ip:port,ip:port,...` names the replicas outright (the one-machine stack's extractors).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import grpc

OPTIONS: list[tuple[str, Any]] = [
    ("grpc.lb_policy_name", "round_robin"),
    # How soon a name may be resolved again (gRPC's default is 30 s).
    ("grpc.dns_min_time_between_resolutions_ms", 5_000),
]


def target(address: str) -> str:
    """The gRPC target for a `host:port` or a comma-separated list of `ip:port`."""
    parts = [a.strip() for a in address.split(",")]
    if len(parts) == 1:
        return f"dns:///{parts[0]}"
    for part in parts:
        host, sep, port = part.rpartition(":")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f"{part!r}: a list of replicas takes IPv4 addresses (ip:port); "
                "give one name instead and let DNS list them"
            ) from None
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{part!r}: not ip:port")
    return "ipv4:" + ",".join(parts)


def channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target(address), options=OPTIONS)


def sync_channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(target(address), options=OPTIONS)
