"""The one-machine stack end to end: start, health, the first slice, stop, restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil
import pytest

from facegrid.stack import EXTRACTOR_PORT, PORTS, SHARD_PORT
from facegrid.v1 import index_pb2, index_pb2_grpc
from tests.conftest import FACES

from .conftest import RunningStack

COMPONENTS = {
    "redis",
    "mongodb",
    "licensing",
    "indexer-0",
    "indexer-1",
    "extractor",
    "extractor-1",
    "controlplane",
    "gateway",
    "gateway-1",
}
PHOTO = (FACES / "face_recognition" / "examples" / "obama.jpg").read_bytes()


def _facegrid(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    return subprocess.run(
        [sys.executable, "-m", "facegrid", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _search(address: str, gallery: str, vector: np.ndarray) -> list[int]:
    with grpc.insecure_channel(address) as channel:
        response = index_pb2_grpc.IndexShardStub(channel).Search(
            index_pb2.SearchRequest(
                gallery=gallery, vector=vector.astype("<f4").tobytes(), top_n=3
            ),
            timeout=10,
        )
    return [h.id for h in response.hits]


def test_stack_runs_stops_cleanly_and_keeps_data_across_restart(
    tmp_path: Path, port_base: int, launch: Callable[..., RunningStack]
) -> None:
    data = tmp_path / "data"
    stack = launch(data, "--shards", "2", "--extractors", "2", "--gateways", "2")

    status = _facegrid("status", "--data-dir", str(data))
    assert status.returncode == 0, status.stdout
    healthy = {line.split()[0] for line in status.stdout.splitlines() if "healthy (" in line}
    assert healthy == COMPONENTS
    assert "UNHEALTHY" not in status.stdout

    auth = {"Authorization": f"Token {stack.token}"}
    # One connection, so one of the two gateway processes, for the request and its metrics.
    client = httpx.Client(base_url=stack.api, timeout=10)
    created = client.post("/v1/galleries/persist", headers=auth)
    assert created.status_code == 201
    assert httpx.get(f"{stack.api}/v1/galleries", headers={}, timeout=10).status_code == 401
    assert httpx.get(f"{stack.api}/docs", timeout=10).status_code == 200

    shard = f"127.0.0.1:{port_base + SHARD_PORT}"
    vectors = np.random.default_rng(3).normal(size=(20, 128)).astype(np.float32)
    with grpc.insecure_channel(shard) as channel:
        index_pb2_grpc.IndexShardStub(channel).Add(
            index_pb2.AddRequest(
                gallery="persist",
                entries=[
                    index_pb2.IndexEntry(id=500 + i, vector=v.astype("<f4").tobytes())
                    for i, v in enumerate(vectors)
                ],
            ),
            timeout=10,
        )
    assert _search(shard, "persist", vectors[4])[0] == 504
    # The seed's shard HTTP API sits next to the shard's gRPC and metrics ports.
    shard_http = f"http://127.0.0.1:{port_base + SHARD_PORT + 2}"
    info = httpx.get(f"{shard_http}/stat/info/persist", timeout=10).json()
    assert info["cnt_linear"] + info["cnt_indexed"] == 20

    # Every service exposes Prometheus metrics that count the requests it answered.
    gateway_metrics = client.get("/metrics").text
    assert 'method="POST /galleries/{gallery}",outcome="201"' in gateway_metrics
    client.close()
    shard_metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{port_base + SHARD_PORT + 1}/metrics", timeout=10)
        .read()
        .decode()
    )
    assert 'method="/facegrid.v1.IndexShard/Add",outcome="OK"' in shard_metrics
    for key in ("licensing-metrics", "controlplane-metrics", "extractor-metrics"):
        body = (
            urllib.request.urlopen(f"http://127.0.0.1:{port_base + PORTS[key]}/metrics", timeout=10)
            .read()
            .decode()
        )
        assert "facegrid_request_duration_seconds" in body

    # The gateway spreads its calls over both extractors (no models here: each answers that).
    # round_robin sends calls to the extractors it is connected to, and the gateway connects to
    # them at its first call: under load the first few calls may all go to the first one ready.
    def detects_served() -> list[bool]:
        served = []
        for port in (PORTS["extractor-metrics"], EXTRACTOR_PORT + 1):
            url = f"http://127.0.0.1:{port_base + port}/metrics"
            body = urllib.request.urlopen(url, timeout=10).read().decode()
            served.append('method="/facegrid.v1.Extractor/Detect"' in body)
        return served

    for _ in range(10):
        for _ in range(4):
            photo = {"photo": ("p.jpg", PHOTO)}
            detected = httpx.post(f"{stack.api}/v0/detect", headers=auth, files=photo, timeout=30)
            assert detected.status_code == 503, detected.text
        if all(detects_served()):
            break
        time.sleep(0.5)
    assert detects_served() == [True, True]

    # Both gateway processes serve the API port, and both extractors the Extraction API's (the
    # seed's instances behind one port): 16 connections land on each process of a pair.
    extraction = f"http://127.0.0.1:{port_base + PORTS['extractor-http']}"
    for url, module, path in (
        (stack.api, "facegrid.gateway", "/v1/galleries"),
        (extraction, "facegrid.extractor", "/"),
    ):
        clients = [httpx.Client(base_url=url, headers=auth, timeout=10) for _ in range(16)]
        assert all(c.get(path).status_code < 500 for c in clients)
        servers = [p for p in stack.descendants() if module in p.cmdline()]
        assert len(servers) == 2
        port = int(url.rsplit(":", 1)[1])
        for server in servers:
            accepted = [
                c
                for c in server.net_connections(kind="tcp")
                if c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
            ]
            assert accepted, f"{module} {server.pid} took none of 16 connections"
        for c in clients:
            c.close()

    children = stack.descendants()
    assert len(children) >= len(COMPONENTS)
    assert stack.stop(signal.SIGTERM) == 0
    assert _gone(children, timeout=20) == []
    assert not _port_open(port_base)
    assert _facegrid("status", "--data-dir", str(data)).returncode == 1

    again = launch(data, "--shards", "2")
    assert again.token == stack.token
    listed = httpx.get(f"{again.api}/v1/galleries", headers=auth, timeout=10)
    assert listed.json() == {"results": ["default", "persist"]}
    assert _search(shard, "persist", vectors[4])[0] == 504
    # The seed's shard HTTP API sits next to the shard's gRPC and metrics ports.
    shard_http = f"http://127.0.0.1:{port_base + SHARD_PORT + 2}"
    info = httpx.get(f"{shard_http}/stat/info/persist", timeout=10).json()
    assert info["cnt_linear"] + info["cnt_indexed"] == 20
    children = again.descendants()
    assert again.stop(signal.SIGINT) == 0
    assert _gone(children, timeout=20) == []


def test_children_die_with_a_killed_supervisor(
    tmp_path: Path, launch: Callable[..., RunningStack]
) -> None:
    stack = launch(tmp_path / "data")
    children = stack.descendants()
    stack.stop(signal.SIGKILL)
    assert _gone(children, timeout=30) == []


def test_refuses_to_start_on_a_busy_port(tmp_path: Path, port_base: int) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port_base))
        busy.listen()
        result = _facegrid("up", "--data-dir", str(tmp_path), "--port-base", str(port_base))
    assert result.returncode == 1
    assert f"port(s) {port_base} already in use" in result.stdout


def test_bad_stack_setting_stops_start_up(tmp_path: Path) -> None:
    env = {**os.environ, "FACEGRID_SHARDS": "0", "FACEGRID_DATA_DIR": str(tmp_path)}
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "facegrid", "up"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "FACEGRID_SHARDS" in result.stderr
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("flag", ["--shards=0", "--port-base=80"])
def test_bad_command_line_values_stop_start_up(tmp_path: Path, flag: str) -> None:
    result = _facegrid("up", "--data-dir", str(tmp_path), flag)
    assert result.returncode == 2
    assert flag.split("=")[0].removeprefix("--").replace("-", "_") in result.stderr


def test_a_crashed_component_brings_the_stack_down_without_orphans(
    tmp_path: Path, launch: Callable[..., RunningStack]
) -> None:
    stack = launch(tmp_path / "data")
    children = stack.descendants()
    extractor = next(c for c in children if "facegrid.extractor" in " ".join(c.cmdline()))
    extractor.kill()
    assert stack.process.wait(60) == 1
    assert _gone(children, timeout=20) == []
    stack.wait_for("extractor exited with status -9", 5)
