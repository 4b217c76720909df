"""Run a FaceGrid gRPC service: health, metrics, request logging and graceful shutdown.

Every gRPC service starts through `serve()`, so they all answer the standard
`grpc.health.v1.Health` service (overall and per service name), count and time their requests,
and stop the same way on SIGTERM or SIGINT: report NOT_SERVING, finish in-flight calls within
the grace period, then run the service's own clean-up.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY, CollectorRegistry

from facegrid.observability import (
    GrpcObservabilityInterceptor,
    RequestMetrics,
    start_metrics_server,
)

log = logging.getLogger(__name__)

GRACE_SECONDS = 5.0

# The servicer context every handler receives; a string so that nothing is subscripted at run
# time (grpc's classes are generic only in their type stubs).
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

# A service's domain errors and the gRPC status each maps to; the first matching class wins.
StatusTable = Sequence[tuple[type[Exception], grpc.StatusCode]]


async def abort_with(context: Context, error: Exception, table: StatusTable) -> NoReturn:
    """End the call with the status the table gives the error (INTERNAL if none does)."""
    code = next((c for kind, c in table if isinstance(error, kind)), grpc.StatusCode.INTERNAL)
    await context.abort(code, str(error))
    raise AssertionError("unreachable: context.abort raises")


@dataclass
class Registration:
    """One servicer to serve: its generated `add_XServicer_to_server` and its full name."""

    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    service_name: str


@dataclass
class GrpcService:
    name: str
    listen: str
    registrations: Sequence[Registration]
    metrics_listen: str | None = None
    registry: CollectorRegistry = field(default_factory=lambda: REGISTRY)
    # Run after the server is up (e.g. start a companion HTTP server) and after it stopped.
    on_start: Sequence[Callable[[], Awaitable[None]]] = ()
    on_stop: Sequence[Callable[[], Awaitable[None]]] = ()
    # Service names to report NOT_SERVING from the start, with the reason (logged).
    not_serving: dict[str, str] = field(default_factory=dict)
    # Seconds a client connection is kept before the client is asked to reconnect (and so to
    # resolve the service's name again and spread over its replicas); None: for ever.
    max_connection_age: float | None = None


async def start(service: GrpcService) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """Start serving; returns the server, its health servicer and the bound port."""
    metrics = RequestMetrics(service.name, service.registry)
    # No SO_REUSEPORT: a second server on a taken port must fail, not share it silently.
    options: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]
    if service.max_connection_age is not None:
        options += [
            ("grpc.max_connection_age_ms", int(service.max_connection_age * 1000)),
            # Calls in flight when the connection ages out get this long to finish.
            ("grpc.max_connection_age_grace_ms", 30_000),
        ]
    server = grpc.aio.server(interceptors=[GrpcObservabilityInterceptor(metrics)], options=options)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for registration in service.registrations:
        registration.add_to_server(registration.servicer, server)
    try:
        port = server.add_insecure_port(service.listen)
    except RuntimeError as e:  # grpc reports a failed bind as RuntimeError
        raise OSError(f"cannot listen on {service.listen}: the address is in use or invalid") from e
    if port == 0:
        raise OSError(f"cannot listen on {service.listen}")
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    await health_servicer.set("", not_serving if service.not_serving else serving)
    for registration in service.registrations:
        name = registration.service_name
        reason = service.not_serving.get(name)
        if reason:
            log.error("%s reports NOT_SERVING: %s", name, reason)
        await health_servicer.set(name, not_serving if reason else serving)
    return server, health_servicer, port


async def serve(service: GrpcService) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    if service.metrics_listen:
        start_metrics_server(service.metrics_listen, service.registry)
    server, health_servicer, _port = await start(service)
    for callback in service.on_start:
        await callback()
    log.info(
        "%s serving gRPC on %s (metrics on %s)",
        service.name,
        service.listen,
        service.metrics_listen or "-",
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    log.info("%s stopping", service.name)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(GRACE_SECONDS)
    for callback in service.on_stop:
        await callback()
    log.info("%s stopped", service.name)
