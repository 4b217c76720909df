"""The indexer backs its graphs with transparent huge pages: it re-executes itself with glibc's
hugetlb tunable, and a built graph then lives on huge pages (compared with the setting off)."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from facegrid.indexer import hugepages
from facegrid.v1 import index_pb2 as pb
from facegrid.v1 import index_pb2_grpc
from tests.conftest import free_port
from tests.indexer.processes import start_indexer, wait_ready

FACES = 40_000


def test_the_kernel_mode_is_read_from_sysfs(tmp_path: Path) -> None:
    mode = tmp_path / "enabled"
    mode.write_text("always [madvise] never\n")
    assert hugepages.thp_mode(mode) == "madvise"
    mode.write_text("always madvise [never]\n")
    assert hugepages.thp_mode(mode) == "never"
    assert hugepages.thp_mode(tmp_path / "missing") == ""


def _huge_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return 0


def _graph_on_huge_pages(tmp_path: Path, huge_pages: bool) -> tuple[int, str]:
    """(AnonHugePages in KiB once a graph of FACES vectors is built, the tunables it ran with)."""
    port = free_port()
    # A small, quickly built graph is enough to show where its memory lives.
    process = start_indexer(
        tmp_path / f"shard-{huge_pages}",
        port,
        huge_pages=str(huge_pages).lower(),
        hnsw_m="4",
        hnsw_ef_construction="8",
        build_graph_min="1000",
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = index_pb2_grpc.IndexShardStub(channel)
            wait_ready(stub, process)
            deadline = time.monotonic() + 150
            vectors = np.random.default_rng(3).normal(size=(FACES, 128)).astype("<f4")
            for start in range(0, FACES, 5000):
                entries = [
                    pb.IndexEntry(id=i + 1, vector=vectors[i].tobytes())
                    for i in range(start, start + 5000)
                ]
                stub.Add(pb.AddRequest(gallery="g", entries=entries), timeout=30)
            while True:
                (gallery,) = stub.Stats(pb.StatsRequest(), timeout=5).galleries
                if gallery.indexed == FACES:
                    break
                assert time.monotonic() < deadline, "the graph was never built"
                time.sleep(0.2)
        environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
        tunables = [e.decode() for e in environ if e.startswith(b"GLIBC_TUNABLES=")]
        return _huge_kib(process.pid), ",".join(tunables)
    finally:
        process.kill()
        process.wait()


def test_a_built_graph_lives_on_huge_pages(tmp_path: Path) -> None:
    why_not = hugepages.why_not()
    if why_not is not None:
        pytest.skip(f"huge pages cannot be had here: {why_not}")
    off, off_tunables = _graph_on_huge_pages(tmp_path, huge_pages=False)
    on, on_tunables = _graph_on_huge_pages(tmp_path, huge_pages=True)
    assert off_tunables == ""
    assert on_tunables == "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
    # hnswlib's part alone: 40,000 places of 128 floats, 8 links and a label, about 22 MB.
    graph_kib = FACES * (128 * 4 + 4 + 8 * 4 + 8) // 1024
    assert on - off >= graph_kib // 2, (on, off, graph_kib)
