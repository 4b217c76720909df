"""`facegrid-operator`: the Kubernetes operator (kopf) and the ControlPlane it serves.

One process: kopf reconciles FaceGallery and Camera resources (and watches the video worker
pods), and a gRPC server answers the gateways and video workers from what it has seen. With
`peering` set, kopf's peering keeps a single replica active; the others stand by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import kopf
import yaml
from kubernetes import client, config
from prometheus_client import REGISTRY, CollectorRegistry

from facegrid import grpcserver
from facegrid.entrypoint import run_service
from facegrid.observability import start_metrics_server
from facegrid.operator.kube.api import KubeApi
from facegrid.operator.kube.handlers import Reconciler, register
from facegrid.operator.kube.plane import FINALIZER
from facegrid.operator.reshard import SlotMover
from facegrid.operator.servicer import ControlPlaneServicer
from facegrid.operator.settings import OperatorSettings
from facegrid.v1 import controlplane_pb2, controlplane_pb2_grpc

log = logging.getLogger(__name__)


def read_template(settings: OperatorSettings) -> dict[str, Any]:
    """The video worker template the chart mounts; an unreadable one stops the start."""
    try:
        template = yaml.safe_load(settings.video_template.read_text())
    except OSError as e:
        raise OSError(f"video worker template {settings.video_template}: {e.strerror}") from e
    if not isinstance(template, dict) or not isinstance(template.get("deployment"), dict):
        raise OSError(f"video worker template {settings.video_template} has no `deployment`")
    return template


def kube_client() -> client.ApiClient:
    """In a pod: its service account. Elsewhere: the current kubeconfig context."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        except config.ConfigException as e:
            raise OSError(f"no Kubernetes API to talk to: not in a pod, and {e}") from e
    return client.ApiClient()


async def run(
    settings: OperatorSettings,
    api_client: client.ApiClient,
    *,
    login: Callable[..., Any] | None = None,
    ready: asyncio.Event | threading.Event | None = None,
    stop: asyncio.Event | threading.Event | None = None,
    registry: CollectorRegistry = REGISTRY,
) -> None:
    """Reconcile and serve until `stop` is set (or SIGTERM); `login` overrides kopf's."""
    template = read_template(settings)
    api = KubeApi(api_client, settings.namespace)
    mover = SlotMover()
    reconciler = Reconciler(settings, api, mover, template, registry)
    await reconciler.warm()

    handlers = kopf.OperatorRegistry()
    register(handlers, reconciler)

    @kopf.on.startup(registry=handlers)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 300
        settings.persistence.finalizer = FINALIZER

    if login is not None:
        kopf.on.login(registry=handlers)(login)

    service = grpcserver.GrpcService(
        name="operator",
        listen=settings.listen,
        metrics_listen=settings.metrics_listen,
        registrations=[
            grpcserver.Registration(
                controlplane_pb2_grpc.add_ControlPlaneServicer_to_server,
                ControlPlaneServicer(reconciler.plane),
                controlplane_pb2.DESCRIPTOR.services_by_name["ControlPlane"].full_name,
            )
        ],
        registry=registry,
    )
    if settings.metrics_listen:
        start_metrics_server(settings.metrics_listen, registry)
    server, _, _ = await grpcserver.start(service)
    log.info(
        "operator serving ControlPlane on %s, namespace %s", settings.listen, settings.namespace
    )
    try:
        await kopf.operator(
            registry=handlers,
            namespaces=[settings.namespace],
            standalone=not settings.peering,
            peering_name=settings.peering or None,
            ready_flag=ready,
            stop_flag=stop,
        )
    except asyncio.CancelledError:
        # kopf ends its run by cancellation once the stop flag is set: that is a clean stop.
        if stop is None or not stop.is_set():
            raise
    finally:
        # kopf cancels, as it ends, every task started in the loop after it: the gRPC server's
        # request tasks among them, which its stop then reports. The server goes either way.
        with contextlib.suppress(asyncio.CancelledError):
            await server.stop(grpcserver.GRACE_SECONDS)
        await mover.close()


async def serve(settings: OperatorSettings) -> None:
    read_template(settings)  # before connecting: a bad mount is the likelier mistake
    await run(settings, kube_client())


def main(argv: list[str] | None = None) -> None:
    run_service(
        "facegrid-operator",
        "Reconcile FaceGallery and Camera resources and serve ControlPlane (Kubernetes).",
        OperatorSettings,
        serve,
        argv,
    )
