"""Transparent huge pages for the shard's HNSW graphs.

A search visits a few thousand vectors at random places in a graph of about 700 MB per million
faces; on 4 KiB pages nearly every visit also misses the TLB. hnswlib allocates the graph with
malloc, and glibc (2.35 and later) asks the kernel for transparent huge pages for its large
allocations when the tunable `glibc.malloc.hugetlb=1` is set, wherever the kernel's THP mode is
"madvise" or "always". Measured on this project's 2-core machine, one saved 1M-face graph (M=20,
ef 200) loaded by 5 alternating pairs of processes, 2,000 queries each: mean search time 0.86 to
1.05 ms on huge pages against 1.09 to 1.19 ms without. In bench/indexer_facelike.py at 1M faces
(M=24, ef 200) p99 was 2.30 ms on small pages and 1.81 ms on huge pages (two runs; p99 moves by
a few tenths of a millisecond between runs here).

glibc reads its tunables when a process starts, so the indexer re-executes itself once with the
tunable added, before it opens its shard.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# glibc 2.35 added the tunable.
GLIBC_MIN = (2, 35)


def thp_mode(path: Path = THP_MODE) -> str:
    """The kernel's transparent huge page mode ("always", "madvise" or "never"; "" if unknown)."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else ""


def why_not() -> str | None:
    """Why huge pages cannot be had here (None when they can)."""
    library, version = platform.libc_ver()
    if library != "glibc":
        return "the C library is not glibc"
    numbers = tuple(int(n) for n in version.split(".")[:2] if n.isdigit())
    if numbers < GLIBC_MIN:
        return f"glibc {version} is older than 2.35"
    mode = thp_mode()
    if mode not in ("always", "madvise"):
        return f"the kernel's transparent huge pages are {mode or 'unavailable'}"
    return None


def enabled() -> bool:
    """True when this process started with the tunable set."""
    return f"{TUNABLE}=1" in os.environ.get("GLIBC_TUNABLES", "").split(":")


def reexec_with_huge_pages() -> str | None:
    """Re-execute this process with the tunable added (does not return), unless it is set
    already or huge pages cannot be had; returns why not then (None when already enabled)."""
    if enabled():
        return None
    if f"{TUNABLE}=" in os.environ.get("GLIBC_TUNABLES", ""):
        return f"GLIBC_TUNABLES sets {TUNABLE} already"
    reason = why_not()
    if reason is not None:
        return reason
    tunables = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t]
    tunables.append(f"{TUNABLE}=1")
    env = {**os.environ, "GLIBC_TUNABLES": ":".join(tunables)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
