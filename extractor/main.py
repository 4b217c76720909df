"""`facegrid-extractor`: serve detection, face vectors and attributes over gRPC.

Models load, are checked against the bundle manifest and warmed up before the server starts,
so "SERVING" means the first request is answered at full speed.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import replace

import grpc
import onnxruntime
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from facegrid import grpcserver, httpserver
from facegrid.entrypoint import run_service
from facegrid.extractor import http_api
from facegrid.extractor.core import BadBundle, Bundle, Extractor
from facegrid.extractor.core.detect import DetectorParams
from facegrid.extractor.core.engine import Engine
from facegrid.extractor.core.extraction import Extraction
from facegrid.extractor.core.models import Provider
from facegrid.extractor.http_api import HttpOptions
from facegrid.extractor.servicer import ExtractorServicer
from facegrid.extractor.settings import ExtractorSettings
from facegrid.fetch import FetchPolicy, parse_networks
from facegrid.httpserver import Hook
from facegrid.licence import LicenceClient
from facegrid.observability import LATENCY_BUCKETS
from facegrid.settings import ConfigError, exit_on_config_error
from facegrid.v1 import extractor_pb2, extractor_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = extractor_pb2.DESCRIPTOR.services_by_name["Extractor"].full_name


def providers_for(settings: ExtractorSettings) -> tuple[list[Provider], str]:
    """(onnxruntime providers, reason the device cannot be used or "")."""
    available = list(onnxruntime.get_available_providers())
    if settings.device == "cuda":
        if "CUDAExecutionProvider" not in available:
            return [], (
                "FACEGRID_EXTRACTOR_DEVICE=cuda but onnxruntime offers no CUDAExecutionProvider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu or use cpu"
            )
        cuda = {
            "cudnn_conv_algo_search": settings.cuda_conv_algo_search,
            "use_tf32": "1" if settings.cuda_tf32 else "0",
        }
        return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"], ""
    return ["CPUExecutionProvider"], ""


def provider_names(providers: list[Provider]) -> list[str]:
    return [p if isinstance(p, str) else p[0] for p in providers]


def build(
    settings: ExtractorSettings, registry: CollectorRegistry = REGISTRY
) -> grpcserver.GrpcService:
    providers, unavailable = providers_for(settings)
    names = provider_names(providers)
    bundle = Bundle.load(settings.model_dir) if settings.model_dir else None
    extraction = None
    if bundle is not None and not unavailable:
        assert settings.model_dir is not None
        stages = Histogram(
            "facegrid_extractor_stage_seconds",
            "Time spent per pipeline stage and call.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        engine = Engine(
            settings.model_dir,
            providers,
            settings.threads,
            detector_params(settings),
            batch_wait=settings.batch_wait_ms / 1000,
            max_batch=settings.model_batch,
            observe=lambda stage, seconds: stages.labels(stage).observe(seconds),
            spin=settings.spin,
        )
        engine.warm_up()
        extraction = Extraction(
            engine, settings.max_batch, settings.min_face_size, settings.max_face_size
        )
        log.info("models %s %s loaded on %s", bundle.version, settings.model_dir, names[0])
    extractor = Extractor(bundle, names or ["none"], unavailable)
    licence = licence_client(settings)
    on_start, on_stop = _http_server(settings, extraction, licence)
    on_start.append(licence.start)
    on_stop.append(licence.stop)
    if extraction is not None:
        engine = extraction.engine

        async def close_engine() -> None:
            engine.close()

        on_stop.append(close_engine)
    return grpcserver.GrpcService(
        name="extractor",
        listen=settings.listen,
        metrics_listen=settings.metrics_listen,
        registrations=[
            grpcserver.Registration(
                extractor_pb2_grpc.add_ExtractorServicer_to_server,
                ExtractorServicer(extractor, extraction, licence),
                SERVICE_NAME,
            )
        ],
        registry=registry,
        not_serving={SERVICE_NAME: unavailable} if unavailable else {},
        max_connection_age=settings.max_connection_age or None,
        on_start=on_start,
        on_stop=on_stop,
    )


def licence_client(settings: ExtractorSettings) -> LicenceClient:
    """An extractor instance holds one `extractors` lease while it runs."""
    return LicenceClient(
        grpc.aio.insecure_channel(settings.licensing) if settings.licensing else None,
        "extractor",
        f"extractor-{socket.gethostname()}-{os.getpid()}",
        address=settings.listen,
        hold=("extractors",),
        grace=settings.license_grace,
    )


def detector_params(settings: ExtractorSettings) -> DetectorParams:
    p, r, o = (float(v) for v in settings.detect_thresholds)
    return DetectorParams(scale_factor=settings.detect_scale_factor, thresholds=(p, r, o))


def http_options(settings: ExtractorSettings, licence: LicenceClient | None = None) -> HttpOptions:
    """The Extraction API's options from the settings (no licence: the unlicensed default)."""
    policy = FetchPolicy(
        max_bytes=settings.fetch_size_limit,
        allow=parse_networks(settings.fetch_allow),
        proxy=settings.fetch_proxy,
    )
    options = HttpOptions(settings.quality_estimator, settings.fetch_enabled, policy)
    return options if licence is None else replace(options, licence=licence)


def _http_server(
    settings: ExtractorSettings, extraction: Extraction | None, licence: LicenceClient
) -> tuple[list[Hook], list[Hook]]:
    """Start and stop hooks for the Extraction API over HTTP, if it is enabled."""
    if not settings.http_listen:
        return [], []
    app = http_api.create_app(lambda: extraction, http_options(settings, licence))
    start, stop = httpserver.embedded(
        app, settings.http_listen, "Extraction API", reuse_port=settings.http_reuse_port
    )
    return [start], [stop]


async def serve(settings: ExtractorSettings) -> None:
    try:
        service = build(settings)
    except BadBundle as e:
        # A broken bundle is a configuration error: stop with the reason, not a traceback.
        exit_on_config_error(
            "facegrid-extractor", ConfigError(f"FACEGRID_EXTRACTOR_MODEL_DIR: {e}")
        )
        return
    await grpcserver.serve(service)


def main(argv: list[str] | None = None) -> None:
    run_service(
        "facegrid-extractor",
        "Serve FaceGrid face detection, face vectors and attributes over gRPC.",
        ExtractorSettings,
        serve,
        argv,
    )
