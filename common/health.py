"""Is a component healthy? One probe per kind of component, shared by `up` and `status`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pymongo import MongoClient
from pymongo.errors import PyMongoError

Kind = Literal["redis", "mongodb", "grpc", "http"]


@dataclass(frozen=True)
class Probe:
    kind: Kind
    # host:port for redis, grpc and http; a connection URI for mongodb.
    target: str


def check(probe: Probe, timeout: float = 2.0) -> tuple[bool, str]:
    """(healthy, detail) for one component; never raises for an unhealthy one."""
    if probe.kind == "grpc":
        return _grpc(probe.target, timeout)
    if probe.kind == "http":
        return _http(probe.target, timeout)
    if probe.kind == "redis":
        return _redis(probe.target, timeout)
    return _mongo(probe.target, timeout)


def _grpc(address: str, timeout: float) -> tuple[bool, str]:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError as e:
            return False, f"{e.code().name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def _http(address: str, timeout: float) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=timeout) as response:
            body = json.loads(response.read())
    except (OSError, ValueError) as e:
        return False, str(getattr(e, "reason", e))
    return body.get("status") == "ok", str(body.get("status"))


def _redis(address: str, timeout: float) -> tuple[bool, str]:
    host, _, port = address.rpartition(":")
    client = redis.Redis(
        host=host, port=int(port), socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        return bool(client.ping()), "PONG"
    except redis.RedisError as e:
        return False, type(e).__name__
    finally:
        client.close()


def _mongo(uri: str, timeout: float) -> tuple[bool, str]:
    try:
        client: MongoClient[dict[str, Any]] = MongoClient(
            uri, serverSelectionTimeoutMS=int(timeout * 1000)
        )
        with client:
            client.admin.command("ping")
    except PyMongoError as e:
        return False, type(e).__name__
    return True, "ping ok"
