"""Logging and Prometheus metrics shared by every FaceGrid process.

Every request a service answers leaves one log line and updates two metrics: a counter by method
and outcome, and a latency histogram by method. Library code here takes a `registry`; only a
service's `main()` passes the global one.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from facegrid.settings import split_host_port

# Face recognition calls range from sub-millisecond index lookups to batched inference.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

request_log = logging.getLogger("facegrid.requests")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log_request(protocol: str, method: str, outcome: str, seconds: float, **fields: Any) -> None:
    extra = " ".join(f"{k}={v}" for k, v in fields.items())
    request_log.info(
        "%s %s %s %.1fms%s",
        protocol,
        method,
        outcome,
        seconds * 1000,
        f" {extra}" if extra else "",
        extra={
            "fields": {
                "protocol": protocol,
                "method": method,
                "outcome": outcome,
                "ms": round(seconds * 1000, 2),
                **fields,
            }
        },
    )


class RequestMetrics:
    """The request counter and latency histogram of one service."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "facegrid_requests",
            "Requests answered, by method and outcome (gRPC status or HTTP code).",
            ["service", "protocol", "method", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "facegrid_request_duration_seconds",
            "Time to answer a request, by method.",
            ["service", "protocol", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.service = service

    def observe(self, protocol: str, method: str, outcome: str, seconds: float) -> None:
        self.requests.labels(self.service, protocol, method, outcome).inc()
        self.latency.labels(self.service, protocol, method).observe(seconds)
        log_request(protocol, method, outcome, seconds)


class GrpcObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Times every unary and server-streaming call, counts it by status code, logs it."""

    def __init__(self, metrics: RequestMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith("/grpc.health."):
            return handler  # health probes every few seconds would drown the request log
        metrics = self._metrics

        def outcome(context: Any, error: BaseException | None) -> str:
            code = context.code()
            if isinstance(code, grpc.StatusCode):
                return str(code.name)
            return "UNKNOWN" if error is not None else "OK"

        if handler.unary_unary is not None:
            inner_unary: Any = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                start = time.perf_counter()
                error: BaseException | None = None
                try:
                    return await inner_unary(request, context)
                except BaseException as e:
                    error = e
                    raise
                finally:
                    metrics.observe(
                        "grpc", method, outcome(context, error), time.perf_counter() - start
                    )

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                start = time.perf_counter()
                error: BaseException | None = None
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except BaseException as e:
                    error = e
                    raise
                finally:
                    metrics.observe(
                        "grpc", method, outcome(context, error), time.perf_counter() - start
                    )

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def start_metrics_server(
    address: str, registry: CollectorRegistry
) -> tuple[WSGIServer, threading.Thread]:
    """Serve `/metrics` over HTTP on address (HOST:PORT) from a daemon thread."""
    host, port = split_host_port(address)
    return start_http_server(port, addr=host, registry=registry)
