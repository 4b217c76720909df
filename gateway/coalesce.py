"""Concurrent calls of one operation, made as few calls: group commit for the gateway's writes.

A Coalescer owns one batched operation (an insert of many documents, an index add of many
entries). While a call of it is in flight, the callers that arrive queue; when it returns,
everything queued goes in the next call, up to max_batch items. A caller alone waits no longer
than before, and no timer holds anyone back; under load, many callers share one round trip (and
the database's or the shard's journal flush), which is what a write per request cannot do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# run(items) -> one outcome per item, in order: its result, or the exception its caller gets.
Run = Callable[[list[T]], Awaitable[Sequence["R | BaseException"]]]


class Coalescer(Generic[T, R]):
    def __init__(self, run: Run[T, R], max_batch: int = 256) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, done))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())
        return await done

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._settle(batch)
        finally:
            self._drainer = None
            # Cancelled (shutdown): nobody is left waiting forever.
            for _, done in self._queue:
                if not done.done():
                    done.set_exception(RuntimeError("the gateway is stopping"))
            self._queue.clear()

    async def _settle(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            outcomes = await self._run([item for item, _ in batch])
        except BaseException as e:
            # The whole call failed, and so did each caller's part. A drain cancelled at
            # shutdown tells its callers so, then stops.
            failure = e if isinstance(e, Exception) else RuntimeError("the gateway is stopping")
            for _, done in batch:
                if not done.done():
                    done.set_exception(failure)
            if failure is not e:
                raise
            return
        if len(outcomes) != len(batch):
            outcomes = [AssertionError(f"{len(outcomes)} outcomes for {len(batch)} items")] * len(
                batch
            )
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            if done.done():  # its caller was cancelled
                continue
            if isinstance(outcome, BaseException):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)
