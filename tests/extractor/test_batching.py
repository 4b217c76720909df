"""Micro-batching: concurrent callers share model runs and each gets exactly its own rows."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from facegrid.extractor.core.batching import MicroBatcher


class Model:
    """Doubles its input and records the batch sizes it was run with."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.sizes: list[int] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        with self.lock:
            self.sizes.append(len(rows))
        if self.fail_on is not None and (rows == self.fail_on).any():
            raise ValueError("model failure")
        return rows * 2


def test_concurrent_callers_are_merged_and_get_their_own_rows() -> None:
    model = Model()
    batcher = MicroBatcher(model, max_batch=64, max_wait=0.05)
    start = threading.Barrier(16)

    def call(i: int) -> np.ndarray:
        start.wait()
        return batcher(np.full((3, 2), i, dtype=np.float32))

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(16)))
    batcher.close()
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out, np.full((3, 2), 2 * i))
    assert sum(model.sizes) == 48
    assert len(model.sizes) < 16  # calls were merged
    assert max(model.sizes) <= 64


def test_batches_never_exceed_max_batch() -> None:
    model = Model()
    batcher = MicroBatcher(model, max_batch=10, max_wait=0.05)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: batcher(np.full((4, 1), i)), range(8)))
    batcher.close()
    assert sum(model.sizes) == 32
    assert max(model.sizes) <= 10


def test_a_failed_run_fails_only_its_callers() -> None:
    model = Model(fail_on=7)
    batcher = MicroBatcher(model, max_batch=64, max_wait=0.0)
    with pytest.raises(ValueError, match="model failure"):
        batcher(np.full((2, 1), 7))
    np.testing.assert_array_equal(batcher(np.ones((2, 1))), np.full((2, 1), 2))
    batcher.close()


def test_single_caller_and_closed_batcher() -> None:
    batcher = MicroBatcher(Model(), max_batch=4, max_wait=0.0)
    np.testing.assert_array_equal(batcher(np.arange(3)[:, None]), np.arange(3)[:, None] * 2)
    assert batcher(np.empty((0, 1))).shape == (0, 1)
    batcher.close()
    with pytest.raises(RuntimeError):
        batcher(np.ones((1, 1)))
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(Model(), max_batch=0)
