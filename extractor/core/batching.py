"""Micro-batching: many callers' small model runs merged into few large ones.

An accelerator is only busy when it gets large batches, but each caller brings a few faces. A
MicroBatcher owns one model call: callers submit their rows and block; a worker thread takes
what is waiting, up to `max_batch` rows, waiting at most `max_wait` seconds for more once the
first rows arrive, runs the model once on all of them and hands each caller its own rows back.
A failure of the model run fails exactly the callers whose rows were in it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Rows = npt.NDArray[np.generic]


@dataclass
class _Job:
    rows: Rows
    future: Future[Rows]


class MicroBatcher:
    def __init__(
        self,
        run: Callable[[Rows], Rows],
        max_batch: int = 64,
        max_wait: float = 0.002,
        name: str = "batcher",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait < 0:
            raise ValueError("max_wait must not be negative")
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._on_batch = on_batch
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._held: _Job | None = None
        self._worker = threading.Thread(target=self._loop, name=name, daemon=True)
        self._closed = False
        self._worker.start()

    def __call__(self, rows: Rows) -> Rows:
        """Run the model on rows (batched with other callers'); blocks until done."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        if len(rows) == 0:
            return self._run(rows)
        job = _Job(rows, Future())
        self._jobs.put(job)
        return job.future.result()

    def close(self) -> None:
        self._closed = True
        self._jobs.put(None)
        self._worker.join()

    def _next(self, timeout: float | None) -> _Job | None:
        if self._held is not None:
            job, self._held = self._held, None
            return job
        return (
            self._jobs.get(timeout=timeout)
            if timeout is None or timeout > 0
            else (self._jobs.get_nowait())
        )

    def _loop(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                return
            batch, size = [first], len(first.rows)
            deadline = time.monotonic() + self.max_wait
            stop = False
            while size < self.max_batch:
                try:
                    job = self._next(max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                if size + len(job.rows) > self.max_batch and size > 0:
                    self._held = job  # it opens the next batch
                    break
                batch.append(job)
                size += len(job.rows)
            self._execute(batch)
            if stop:
                return

    def _execute(self, batch: list[_Job]) -> None:
        try:
            out = self._run(np.concatenate([job.rows for job in batch]))
        except Exception as e:  # noqa: BLE001 - handed to every caller of this batch
            for job in batch:
                job.future.set_exception(e)
            return
        if self._on_batch is not None:
            self._on_batch(len(out))
        start = 0
        for job in batch:
            end = start + len(job.rows)
            job.future.set_result(out[start:end])
            start = end
