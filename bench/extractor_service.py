"""Extractor throughput through gRPC with concurrent clients (CPU here; `--device cuda` on a GPU).

Starts the real extractor server on loopback with a freshly built bundle, then keeps
`--clients` concurrent callers busy for `--seconds`:
- prenormalized chips, `--chips` per call: face vectors per second (micro-batching merges the
  callers' chips into model runs of up to `--model-batch`);
- 640x480 photos with one face, one per call: photos per second (detect, align, facen).
Run once with `--batch-wait-ms 0` to see what micro-batching adds. `--processes N` starts N
extractor processes instead of one in this process, and the callers spread their calls over
them as the gateway does (gRPC round_robin): how far more processes carry one machine (the
per-stage means are then not shown).

    FACEGRID_MODEL_CACHE=... python bench/extractor_service.py [--clients 8 32] [--device cuda]

FACEGRID_BENCH_MODELS: a folder where the bundle is built once and kept (see gateway_latency).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from prometheus_client import CollectorRegistry

from facegrid import balancing, grpcserver
from facegrid.extractor import main as extractor_main
from facegrid.extractor.bundle import build
from facegrid.extractor.settings import ExtractorSettings
from facegrid.health import Probe
from facegrid.v1 import extractor_pb2 as pb
from facegrid.v1 import extractor_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))
from reindex import wait_healthy

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(
    stub: extractor_pb2_grpc.ExtractorStub,
    request: pb.ExtractRequest,
    clients: int,
    seconds: float,
) -> float:
    """Items (results) per second with `clients` callers repeating request."""
    await stub.Extract(request)
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            response = await stub.Extract(request)
            done += sum(1 for r in response.results if not r.error.code)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - start)


def stage_totals(registry: CollectorRegistry) -> dict[str, tuple[float, float]]:
    """(calls, seconds) so far per stage of the extractor's stage histogram."""
    totals: dict[str, list[float]] = {}
    for metric in registry.collect():
        if metric.name != "facegrid_extractor_stage_seconds":
            continue
        for sample in metric.samples:
            entry = totals.setdefault(sample.labels["stage"], [0.0, 0.0])
            if sample.name.endswith("_count"):
                entry[0] = sample.value
            elif sample.name.endswith("_sum"):
                entry[1] = sample.value
    return {stage: (n, s) for stage, (n, s) in totals.items()}


def stage_means(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> str:
    """Mean milliseconds per call of each stage between two stage_totals."""
    parts = []
    for stage, (n, s) in after.items():
        n0, s0 = before.get(stage, (0.0, 0.0))
        if n > n0:
            parts.append(f"{stage} {1000 * (s - s0) / (n - n0):.1f} ms x{n - n0:.0f}")
    return "stages: " + ", ".join(parts) if parts else "stages: in other processes"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[8])
    parser.add_argument("--chips", type=int, default=8, help="prenormalized chips per call")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model-batch", type=int, default=256)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--processes", type=int, default=1, help="extractor processes")
    parser.add_argument(
        "--cuda-conv-algo-search",
        choices=["HEURISTIC", "EXHAUSTIVE", "DEFAULT"],
        default="HEURISTIC",
    )
    args = parser.parse_args()

    photo = cv2.imread(str(FACES / "face_recognition/examples/obama.jpg"))
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[:, 80:560] = cv2.resize(photo, (480, 480))
    photo_jpeg = cv2.imencode(".jpg", canvas)[1].tobytes()

    with tempfile.TemporaryDirectory() as tmp:
        models = os.environ.get("FACEGRID_BENCH_MODELS") or tmp
        bundle = build(Path(models), progress=lambda _line: None).path
        settings = ExtractorSettings(
            listen=f"127.0.0.1:{free_port()}",
            metrics_listen=None,
            http_listen=None,
            model_dir=bundle,
            device=args.device,
            cuda_conv_algo_search=args.cuda_conv_algo_search,
            model_batch=args.model_batch,
            batch_wait_ms=args.batch_wait_ms,
            max_batch=max(64, args.chips),
        )
        registry = CollectorRegistry()
        if args.processes > 1:
            server = None
            processes, address = start_processes(settings, args.processes)
        else:
            server, _, port = await grpcserver.start(extractor_main.build(settings, registry))
            processes, address = [], f"127.0.0.1:{port}"
        async with balancing.channel(address) as channel:
            stub = extractor_pb2_grpc.ExtractorStub(channel)
            first = await stub.Extract(
                pb.ExtractRequest(
                    items=[pb.ExtractItem(image=pb.Image(data=photo_jpeg))],
                    normalized=True,
                )
            )
            chip = first.results[0].normalized
            chips = pb.ExtractRequest(
                items=[pb.ExtractItem(image=pb.Image(data=chip), prenormalized=True)] * args.chips,
                facen=True,
            )
            where = f"{args.device}, {args.processes} extractor process(es)"
            for clients in args.clients:
                before = stage_totals(registry)
                faces = await load(stub, chips, clients, args.seconds)
                print(
                    f"{where}: prenormalized chips, {clients} clients x {args.chips} per call,"
                    f" batch wait {args.batch_wait_ms} ms: {faces:,.0f} faces/s; "
                    f"{stage_means(before, stage_totals(registry))}",
                    flush=True,
                )
            photos = pb.ExtractRequest(
                items=[pb.ExtractItem(image=pb.Image(data=photo_jpeg))], facen=True
            )
            for clients in args.clients:
                before = stage_totals(registry)
                rate = await load(stub, photos, clients, args.seconds)
                print(
                    f"{where}: 640x480 photos (detect, align, facen), {clients} clients:"
                    f" {rate:,.1f} photos/s; {stage_means(before, stage_totals(registry))}",
                    flush=True,
                )
        if server is not None:
            await server.stop(None)
        for process in processes:
            process.terminate()
            process.wait()


# The settings each extractor process of --processes gets from this bench's.
PASSED_ON = (
    "model_dir", "device", "cuda_conv_algo_search", "model_batch", "batch_wait_ms", "max_batch"
)  # fmt: skip


def start_processes(
    settings: ExtractorSettings, count: int
) -> tuple[list[subprocess.Popen[bytes]], str]:
    """count extractor processes with these settings, each on a port of its own; returns them
    and the address list for a balanced channel, once every one answers its health check."""
    ports = [free_port() for _ in range(count)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    env.update(
        {
            f"FACEGRID_EXTRACTOR_{name.upper()}": str(value)
            for name, value in settings.model_dump(exclude_none=True).items()
            if name in PASSED_ON
        }
    )
    env.update(FACEGRID_EXTRACTOR_METRICS_LISTEN="", FACEGRID_EXTRACTOR_HTTP_LISTEN="")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "facegrid.extractor"],
            env={**env, "FACEGRID_EXTRACTOR_LISTEN": f"127.0.0.1:{port}"},
        )
        for port in ports
    ]
    for port, process in zip(ports, processes, strict=True):
        address = f"127.0.0.1:{port}"
        wait_healthy(Probe("grpc", address), process, f"the extractor on {address}", 180)
    return processes, ",".join(f"127.0.0.1:{port}" for port in ports)


if __name__ == "__main__":
    asyncio.run(main())
