"""`facegrid up` as a user runs it: a real supervisor process with every real child process."""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from facegrid.extractor.core.models import BUNDLE_VERSION

STARTUP_TIMEOUT = 120.0


def _block_is_free(base: int, size: int = 100) -> bool:
    for port in range(base, base + size):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_block() -> int:
    """The base of a free block of ports for `facegrid up --port-base`."""
    for _ in range(50):
        # Below Linux's ephemeral range (32768-60999), so no outgoing connection can take a
        # port of the block between this check and the stack binding it.
        base = random.randrange(20_000, 32_000, 100)
        if _block_is_free(base):
            return base
    raise RuntimeError("no free block of ports on loopback")


@pytest.fixture
def port_base() -> int:
    return free_port_block()


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    reader: threading.Thread
    output: list[str] = field(default_factory=list)
    token: str = ""
    api: str = ""

    def wait_for(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.output.append(line)
            if line.strip().startswith("Token:"):
                self.token = line.split()[-1]
            if line.strip().startswith("API:"):
                self.api = line.split()[-1].removesuffix("/v1/")
            if marker in line:
                return
        raise AssertionError(f"never printed {marker!r}; output:\n" + "".join(self.output))

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)


def start_stack(
    data_dir: Path, port_base: int, *extra: str, env_extra: dict[str, str] | None = None
) -> RunningStack:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    env.update(env_extra or {})
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "facegrid",
            "up",
            "--data-dir",
            str(data_dir),
            "--port-base",
            str(port_base),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    stack = RunningStack(process, lines, reader)
    try:
        stack.wait_for("Press Ctrl-C to stop.", STARTUP_TIMEOUT)
    except AssertionError:
        process.kill()
        process.wait(10)
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()
        raise
    return stack


@pytest.fixture
def launch(port_base: int) -> Iterator[Callable[..., RunningStack]]:
    """Starts `facegrid up` on this test's ports; stacks still running at the end are killed."""
    started: list[RunningStack] = []

    def start(data_dir: Path, *extra: str) -> RunningStack:
        stack = start_stack(data_dir, port_base, *extra)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        if stack.process.poll() is None:
            children = stack.descendants()
            stack.process.kill()
            for child in children:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            stack.process.wait(10)
        stack.reader.join(10)
        assert stack.process.stdout is not None
        stack.process.stdout.close()


@contextlib.contextmanager
def stack_with_models(
    data_dir: Path, model_bundle: Path, env_extra: dict[str, str] | None = None
) -> Iterator[tuple[RunningStack, int]]:
    """`facegrid up` on a free port block, using the session's model bundle (linked into its
    data directory, so the stack does not build it again); stopped with SIGTERM afterwards."""
    (data_dir / "models").mkdir()
    (data_dir / "models" / BUNDLE_VERSION).symlink_to(model_bundle, target_is_directory=True)
    base = free_port_block()
    running = start_stack(data_dir, base, env_extra=env_extra)
    try:
        yield running, base
    finally:
        running.process.send_signal(signal.SIGTERM)
        running.process.wait(60)
        running.reader.join(10)
        assert running.process.stdout is not None
        running.process.stdout.close()
