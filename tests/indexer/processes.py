"""A real `facegrid-indexer` process on loopback, for the tests that kill or inspect one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc

from facegrid.v1 import index_pb2 as pb
from facegrid.v1 import index_pb2_grpc


def start_indexer(data: Path, port: int, **settings: str) -> subprocess.Popen[bytes]:
    """The shard on data at port; settings are FACEGRID_INDEXER_<NAME> values by lower name.
    The test's own FACEGRID_* and GLIBC_TUNABLES variables are left out."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FACEGRID_") and k != "GLIBC_TUNABLES"
    }
    values = {
        "data_dir": str(data),
        "listen": f"127.0.0.1:{port}",
        "metrics_listen": "",
        "http_listen": "",
        "log_level": "warning",
        **settings,
    }
    env.update({f"FACEGRID_INDEXER_{name.upper()}": value for name, value in values.items()})
    return subprocess.Popen(
        [sys.executable, "-m", "facegrid.indexer"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_ready(stub: index_pb2_grpc.IndexShardStub, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            stub.Stats(pb.StatsRequest(), timeout=1)
            return
        except grpc.RpcError:
            assert process.poll() is None, f"the shard exited with {process.returncode}"
            assert time.monotonic() < deadline, "the shard never came up"
            time.sleep(0.05)
