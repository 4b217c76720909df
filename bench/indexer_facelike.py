"""Index shard on face-like 128-D vectors: build rate, latency, recall against exact, memory,
snapshot and restart.

Face-like vectors come from a Gaussian fitted to our model's vectors on the identity-labelled
photos in shared/data/faces (the photos of `bench/confidence_mapping.py`): identity centres from
the mean and covariance of the per-person means, each face from its centre plus the pooled
within-person covariance. With 76 people the covariance of the means has rank 75 at most (the
within-person part fills the other dimensions); --shrink moves it towards its diagonal. The
pair-distance lines printed first compare generated faces with the real ones. Each identity
enrols --per-identity faces; each query is a new face of an enrolled identity. Exact neighbours
are computed in the same run (numpy, chunked matmul, distances refined in float64).

The build adds in batches of 10,000 (fsync on) while a second thread searches now and then
(--probe-interval), and waits for the graph; the first 100,000 faces are also added once to a
shard without a builder, for the log's own rate. Memory per face is the RSS growth over the
build (from a base taken after gc and malloc_trim) after gc, and again after malloc_trim, which
takes freed heap pages out.

The vectors extracted from the photos are cached in .cache/face-vectors.npz; the first run
builds the model bundle (set FACEGRID_MODEL_CACHE to reuse downloaded sources).

Each --ef value is measured on the shard reopened from its snapshot with that ef_search, which
also times the restart. A stress case follows: recall on Gaussian noise (no structure at all).

    FACEGRID_MODEL_CACHE=.cache/models python bench/indexer_facelike.py [--faces 100000]
        [--queries 1000] [--ef 32 64 128] [--m 16] [--ef-construction 100] [--data-dir DIR]
        [--stress 100000] [--probe-interval 1.0] [--small-pages]

The graphs are on transparent huge pages, as in the indexer, unless --small-pages.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import psutil

from facegrid.confidence import DEFAULT, distance_for
from facegrid.indexer import hugepages
from facegrid.indexer.core import Shard
from facegrid.indexer.core.gallery import HnswParams

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

BENCH = Path(__file__).resolve().parent
CACHE = BENCH.parent / ".cache" / "face-vectors.npz"
GALLERY = "bench"
BATCH = 10_000
INGEST = 100_000  # faces added once more with the builder off
TOP = 10

# The targets, for a 1M face-like shard, one search thread.
TARGET_THRESHOLD_RECALL = 0.995
TARGET_RECALL10 = 0.99
TARGET_P99_MS = 2.0
TARGET_BYTES_PER_FACE = 1000
TARGET_RESTART_S = 20.0


# -- real vectors and the fitted distribution ----------------------------------------------------


def extract_face_vectors() -> tuple[F32, npt.NDArray[np.str_]]:
    """Our model's vector for the largest face of every labelled photo, with the person's label
    (the same photos and steps as bench/confidence_mapping.py)."""
    sys.path.insert(0, str(BENCH))
    mapping = importlib.import_module("confidence_mapping")
    with tempfile.TemporaryDirectory() as tmp:
        engine = mapping.Engine(mapping.build(Path(tmp), progress=lambda _line: None).path)
    labels, vectors = [], []
    for person, paths in mapping.identities().items():
        for path in paths:
            rgb = mapping.read(path)
            faces = engine.detect(rgb, 20) if rgb is not None else []
            if rgb is None or not faces:
                continue
            face = max(faces, key=lambda f: f.detection.box[2] - f.detection.box[0])
            vectors.append(engine.facen(engine.chip(rgb, face)[None])[0])
            labels.append(person)
    return np.stack(vectors).astype(np.float32), np.array(labels)


def face_vectors() -> tuple[F32, npt.NDArray[np.str_]]:
    if CACHE.exists():
        with np.load(CACHE) as cached:
            return cached["vectors"], cached["labels"]
    vectors, labels = extract_face_vectors()
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(CACHE, vectors=vectors, labels=labels)
    return vectors, labels


def _root(covariance: F64) -> F64:
    """A matrix r with r @ r.T == covariance (which may be singular)."""
    values, vectors = np.linalg.eigh(covariance)
    root: F64 = vectors * np.sqrt(np.maximum(values, 0.0))
    return root


@dataclass(frozen=True)
class FaceModel:
    mean: F64  # mean of the identity centres
    between: F64  # a square root of the covariance of the identity centres
    within: F64  # a square root of the pooled covariance of faces around their centre
    people: int
    faces: int

    @classmethod
    def fit(cls, vectors: F32, labels: npt.NDArray[np.str_], shrink: float) -> FaceModel:
        x = vectors.astype(np.float64)
        person = np.unique(labels, return_inverse=True)[1]
        counts = np.bincount(person)
        keep = counts[person] >= 2  # a person with one photo says nothing about the spread
        x, person = x[keep], np.unique(person[keep], return_inverse=True)[1]
        means = np.stack([x[person == p].mean(axis=0) for p in range(person.max() + 1)])
        residuals = x - means[person]
        within = residuals.T @ residuals / (len(x) - len(means))
        between = np.cov(means, rowvar=False)
        between = (1 - shrink) * between + shrink * np.diag(np.diag(between))
        return cls(means.mean(axis=0), _root(between), _root(within), len(means), len(x))

    def centres(self, rng: np.random.Generator, n: int) -> F32:
        z = rng.standard_normal((n, len(self.mean)))
        return (self.mean + z @ self.between.T).astype(np.float32)

    def faces_of(self, rng: np.random.Generator, centres: F32) -> F32:
        z = rng.standard_normal(centres.shape)
        return (centres + z @ self.within.T).astype(np.float32)


def pair_distances(vectors: F32, labels: npt.NDArray[np.int64]) -> tuple[F64, F64]:
    """Same-person and different-person pair distances."""
    x = vectors.astype(np.float64)
    squared = (x * x).sum(axis=1)
    d = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * x @ x.T, 0))
    upper = np.triu_indices(len(x), k=1)
    same = labels[upper[0]] == labels[upper[1]]
    return d[upper][same], d[upper][~same]


def describe_pairs(name: str, vectors: F32, labels: npt.NDArray[np.int64], limit: float) -> None:
    genuine, impostor = pair_distances(vectors, labels)
    print(
        f"  {name}: same-person median {np.median(genuine):.3f} "
        f"({(genuine <= limit).mean():.3f} within {limit:.3f}), different-person median "
        f"{np.median(impostor):.3f} (p0.01 {np.percentile(impostor, 0.01):.3f}, "
        f"{(impostor <= limit).mean():.1e} within)"
    )


# -- data set -------------------------------------------------------------------------------------


@dataclass
class DataSet:
    vectors: F32  # enrolled faces, id = row
    queries: F32


def face_like(model: FaceModel, faces: int, per_identity: int, queries: int, seed: int) -> DataSet:
    rng = np.random.default_rng(seed)
    people = -(-faces // per_identity)
    centres = model.centres(rng, people)
    vectors = np.empty((faces, len(model.mean)), np.float32)
    for lo in range(0, faces, 100_000):
        hi = min(lo + 100_000, faces)
        vectors[lo:hi] = model.faces_of(rng, centres[np.arange(lo, hi) // per_identity])
    asked = rng.choice(people, size=queries, replace=queries > people)
    return DataSet(vectors, model.faces_of(rng, centres[asked]))


def gaussian(faces: int, queries: int, dim: int, seed: int) -> DataSet:
    rng = np.random.default_rng(seed)
    vectors = np.empty((faces, dim), np.float32)
    for lo in range(0, faces, 100_000):
        hi = min(lo + 100_000, faces)
        vectors[lo:hi] = rng.standard_normal((hi - lo, dim), np.float32)
    return DataSet(vectors, rng.standard_normal((queries, dim), np.float32))


def exact_neighbours(vectors: F32, queries: F32, k: int) -> tuple[I64, F64]:
    """Exact top k rows and distances per query: float32 matmul in chunks for candidates, then
    distances recomputed in float64 for the 4k best candidates of each query."""
    keep = 4 * k
    q = queries.astype(np.float32)
    q_sq = (q * q).sum(axis=1)
    best_rows = np.empty((len(q), 0), np.int64)
    best_d = np.empty((len(q), 0), np.float32)
    for lo in range(0, len(vectors), 32_768):
        chunk = vectors[lo : lo + 32_768]
        d = (chunk * chunk).sum(axis=1)[None, :] - 2 * (q @ chunk.T) + q_sq[:, None]
        take = min(keep, d.shape[1])
        part = np.argpartition(d, take - 1, axis=1)[:, :take]
        rows = np.concatenate([best_rows, part + lo], axis=1)
        dists = np.concatenate([best_d, np.take_along_axis(d, part, axis=1)], axis=1)
        order = np.argsort(dists, axis=1)[:, :keep]
        best_rows = np.take_along_axis(rows, order, axis=1)
        best_d = np.take_along_axis(dists, order, axis=1)
    diff = vectors[best_rows].astype(np.float64) - queries.astype(np.float64)[:, None, :]
    exact = np.sqrt((diff * diff).sum(axis=2))
    order = np.argsort(exact, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(best_rows, order, axis=1), np.take_along_axis(exact, order, axis=1)


# -- shard measurements ---------------------------------------------------------------------------


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def trimmed_rss() -> int:
    """RSS after glibc hands freed heap pages back (what is live, not what was ever touched)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return int(psutil.Process().memory_info().rss)


def batches(n: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, BATCH):
        yield lo, min(lo + BATCH, n)


def hnsw(args: argparse.Namespace, ef: int) -> HnswParams:
    return HnswParams(m=args.m, ef_construction=args.ef_construction, ef_search=ef)


def ingest(data_dir: Path, params: HnswParams, vectors: F32) -> float:
    """Seconds for durable adds of vectors in batches into a shard without a builder thread."""
    shard = Shard(GALLERY, data_dir, params, build=False)
    start = time.perf_counter()
    for lo, hi in batches(len(vectors)):
        shard.add(GALLERY, np.arange(lo, hi, dtype=np.uint64), vectors[lo:hi])
    took = time.perf_counter() - start
    shard.close()
    shutil.rmtree(data_dir, ignore_errors=True)
    return took


def search_during_build(
    shard: Shard, vectors: F32, stop: threading.Event, latencies: list[float], interval: float
) -> None:
    """Search for enrolled faces, pausing interval seconds between searches, until stopped;
    records each search's time."""
    rng = np.random.default_rng(1)
    while not stop.wait(interval):
        t = time.perf_counter()
        shard.search(GALLERY, vectors[rng.integers(len(vectors))], TOP)
        latencies.append(time.perf_counter() - t)


def build(data_dir: Path, params: HnswParams, vectors: F32, label: str, interval: float) -> None:
    """Durable adds in batches, then wait for the graph; prints rates and memory per face."""
    latencies: list[float] = []
    n = len(vectors)
    ingest_s = ingest(data_dir.with_name(data_dir.name + "-ingest"), params, vectors[:INGEST])
    print(
        f"{label}: durable adds with the builder off (build=False), first "
        f"{min(n, INGEST):,}: {min(n, INGEST) / ingest_s:,.0f} faces/s",
        flush=True,
    )
    base = trimmed_rss()
    shard = Shard(GALLERY, data_dir, params)
    stop = threading.Event()
    probe = threading.Thread(
        target=search_during_build, args=(shard, vectors, stop, latencies, interval)
    )
    start = time.perf_counter()
    if interval > 0:
        probe.start()
    for lo, hi in batches(n):
        shard.add(GALLERY, np.arange(lo, hi, dtype=np.uint64), vectors[lo:hi])
    add_s = time.perf_counter() - start
    indexed_at_adds = shard.stats().galleries[0].indexed
    print(
        f"{label}: durable adds of {n:,} in batches of {BATCH:,} (fsync on): {add_s:.1f} s, "
        f"{n / add_s:,.0f} faces/s; graph held {indexed_at_adds:,} when the adds returned",
        flush=True,
    )
    last = time.perf_counter()
    while shard.stats().galleries[0].unindexed:
        time.sleep(1.0)
        if time.perf_counter() - last >= 60:
            last = time.perf_counter()
            done = shard.stats().galleries[0].indexed
            print(f"  ... {last - start:.0f} s: {done:,} in the graph", flush=True)
    shard.wait_indexed(timeout=24 * 3600)
    graph_s = time.perf_counter() - start
    stop.set()
    if interval > 0:
        probe.join()
    moved = n - indexed_at_adds
    print(
        f"{label}: graph complete {graph_s:.1f} s after the first add: "
        f"{n / graph_s:,.0f} faces/s overall; the builder moved {moved:,} after the adds "
        f"at {moved / max(graph_s - add_s, 1e-9):,.0f} faces/s",
        flush=True,
    )
    if latencies:
        waits = np.array(latencies) * 1000
        print(
            f"{label}: searches from a second thread during the build, {interval:g} s apart: "
            f"{len(waits)} in {graph_s:.0f} s; p50 {np.percentile(waits, 50):.2f} ms, "
            f"p99 {np.percentile(waits, 99):.1f} ms, max {waits.max():.1f} ms",
            flush=True,
        )
    grown = rss() - base
    grown_trimmed = trimmed_rss() - base
    exact = shard._galleries[GALLERY]._exact._vectors.nbytes  # diagnostics: private attribute
    print(
        f"{label}: memory per face (RSS growth / N, after gc): {grown / n:,.0f} bytes "
        f"[target <= {TARGET_BYTES_PER_FACE:,}]; after malloc_trim: {grown_trimmed / n:,.0f} "
        f"bytes; the exact store's emptied matrix accounts for {exact / n:,.0f}",
        flush=True,
    )
    start = time.perf_counter()
    shard.snapshot()
    snapshot_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in data_dir.glob("snapshot-*/*"))
    print(
        f"{label}: snapshot: {snapshot_s:.2f} s, {size / n:,.0f} bytes per face on disk",
        flush=True,
    )
    shard.close()


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


def measure(
    data_dir: Path, params: HnswParams, data: DataSet, truth: I64, truth_d: F64, limit: float
) -> float:
    """Reopen the shard with params, search every query once; prints one line, returns the
    restart time."""
    start = time.perf_counter()
    shard = Shard(GALLERY, data_dir, params)
    restart_s = time.perf_counter() - start
    for q in data.queries[:20]:  # warm up
        shard.search(GALLERY, q, TOP)
    latencies, found, graph_used = [], [], 0
    began = time.perf_counter()
    for q in data.queries:
        t = time.perf_counter()
        result = shard.search(GALLERY, q, TOP)
        latencies.append(time.perf_counter() - t)
        found.append([face_id for face_id, _ in result.hits])
        graph_used += result.used_index
    total_s = time.perf_counter() - began
    shard.close()
    recall1 = np.mean(
        [bool(hits) and hits[0] == t[0] for hits, t in zip(found, truth, strict=True)]
    )
    recall10 = np.mean(
        [len(set(hits) & set(t.tolist())) / TOP for hits, t in zip(found, truth, strict=True)]
    )
    wanted = returned = 0
    for hits, t, d in zip(found, truth, truth_d, strict=True):
        matches = set(t[d <= limit].tolist())
        wanted += len(matches)
        returned += len(matches & set(hits))
    p50, p99 = percentile_ms(latencies, 50), percentile_ms(latencies, 99)
    print(
        f"  ef_search {params.ef_search:4d}: p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
        f"{len(latencies) / total_s:,.0f} queries/s; recall@1 {recall1:.4f}, "
        f"recall@10 {recall10:.4f}, above-threshold {returned / max(wanted, 1):.4f} "
        f"({returned}/{wanted}); restart {restart_s:.2f} s; graph used {graph_used}/"
        f"{len(latencies)}",
        flush=True,
    )
    return restart_s


def run_case(
    args: argparse.Namespace, label: str, data: DataSet, data_dir: Path, limit: float
) -> None:
    build(data_dir, hnsw(args, args.ef[0]), data.vectors, label, args.probe_interval)
    start = time.perf_counter()
    truth, truth_d = exact_neighbours(data.vectors, data.queries, TOP)
    print(
        f"{label}: exact top {TOP} of {len(data.queries):,} queries by brute force: "
        f"{time.perf_counter() - start:.1f} s; {(truth_d <= limit).sum(axis=1).mean():.2f} "
        f"exact neighbours within {limit:.3f} per query "
        f"({(truth_d[:, 0] <= limit).mean():.3f} of queries have one)",
        flush=True,
    )
    print(
        f"{label}: single thread, top {TOP}, Shard.search (graph path) "
        f"[targets at 1M face-like: p99 <= {TARGET_P99_MS} ms, recall@10 >= "
        f"{TARGET_RECALL10}, above-threshold >= {TARGET_THRESHOLD_RECALL}, restart <= "
        f"{TARGET_RESTART_S:.0f} s]"
    )
    for ef in args.ef:
        measure(data_dir, hnsw(args, ef), data, truth, truth_d, limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--per-identity", type=int, default=4)
    parser.add_argument("--shrink", type=float, default=0.0)
    parser.add_argument("--stress", type=int, default=100_000, help="Gaussian faces; 0: skip")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--probe-interval",
        type=float,
        default=1.0,
        help="seconds between searches during the build (each search makes the builder wait "
        "for it, and searches the unindexed faces by brute force); 0: none",
    )
    parser.add_argument(
        "--small-pages",
        action="store_true",
        help="keep the graphs on 4 KiB pages (the indexer's huge_pages=false)",
    )
    args = parser.parse_args()
    # As the indexer does: re-run this process with glibc's hugetlb tunable (see hugepages.py).
    why_not = "--small-pages" if args.small_pages else hugepages.reexec_with_huge_pages()
    print(f"graphs on {'small pages: ' + why_not if why_not else 'transparent huge pages'}")
    limit = distance_for(DEFAULT)

    real, labels = face_vectors()
    model = FaceModel.fit(real, labels, args.shrink)
    print(
        f"fit: {model.faces} faces of {model.people} people with two or more photos "
        f"(of {len(real)} extracted); default threshold: distance {limit:.3f}"
    )
    person = np.unique(labels, return_inverse=True)[1]
    describe_pairs("real     ", real, person, limit)
    sample = face_like(model, 4000, args.per_identity, 0, args.seed + 1)
    describe_pairs("generated", sample.vectors, np.arange(4000) // args.per_identity, limit)
    print(
        f"HNSW M={args.m} ef_construction={args.ef_construction}; {args.per_identity} faces "
        f"per identity; queries are new faces of enrolled identities",
        flush=True,
    )

    root = args.data_dir or Path(tempfile.mkdtemp(prefix="facelike-"))
    cases = ("facelike", "gaussian", "facelike-ingest", "gaussian-ingest")
    for case in cases:  # left by an interrupted run
        shutil.rmtree(root / case, ignore_errors=True)
    try:
        data = face_like(model, args.faces, args.per_identity, args.queries, args.seed)
        run_case(args, f"face-like {args.faces:,}", data, root / "facelike", limit)
        del data
        shutil.rmtree(root / "facelike", ignore_errors=True)
        if args.stress:
            noise = gaussian(args.stress, args.queries, len(model.mean), args.seed)
            print("stress case only, no target: Gaussian vectors, Gaussian queries")
            run_case(args, f"gaussian {args.stress:,}", noise, root / "gaussian", limit)
    finally:
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            for case in cases:
                shutil.rmtree(root / case, ignore_errors=True)


if __name__ == "__main__":
    main()
