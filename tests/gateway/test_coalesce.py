"""Group commit: concurrent calls share round trips, and each caller gets its own outcome."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from facegrid.gateway.coalesce import Coalescer
from facegrid.gateway.core.errors import ServiceUnavailable
from facegrid.gateway.core.model import BBox, Face
from facegrid.gateway.core.ports import NewFace
from facegrid.gateway.mongo import MongoFaceStore


class Recorder:
    """A batched operation that takes a while: it records each call's items, answers each item
    with its double, and refuses the items in `refuse`."""

    def __init__(self, refuse: set[int] | None = None, fail_calls: int = 0) -> None:
        self.calls: list[list[int]] = []
        self.refuse = refuse or set()
        self.fail_calls = fail_calls

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.calls.append(items)
        await asyncio.sleep(0.01)
        if len(self.calls) <= self.fail_calls:
            raise ConnectionError("the database went away")
        return [ValueError(f"refused {i}") if i in self.refuse else i * 2 for i in items]


async def test_callers_arriving_during_a_call_share_the_next() -> None:
    run = Recorder()
    write = Coalescer(run)
    first = asyncio.create_task(write(0))
    await asyncio.sleep(0)  # its call is in flight
    results = await asyncio.gather(*(write(i) for i in range(1, 20)))
    assert await first == 0
    assert results == [i * 2 for i in range(1, 20)]
    # The first caller went alone; the 19 that arrived while it was in flight went together.
    assert run.calls == [[0], list(range(1, 20))]


async def test_callers_arriving_together_share_one_call() -> None:
    run = Recorder()
    write = Coalescer(run)
    assert await asyncio.gather(*(write(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert run.calls == [[0, 1, 2, 3, 4]]


async def test_a_caller_alone_is_not_held_back() -> None:
    run = Recorder()
    write = Coalescer(run)
    for i in range(3):
        assert await write(i) == i * 2
    assert run.calls == [[0], [1], [2]]


async def test_batches_are_bounded() -> None:
    run = Recorder()
    write = Coalescer(run, max_batch=4)
    await asyncio.gather(*(write(i) for i in range(11)))
    assert [len(c) for c in run.calls] == [4, 4, 3]


async def test_a_refused_item_fails_only_its_caller() -> None:
    run = Recorder(refuse={7})
    write = Coalescer(run)
    results = await asyncio.gather(*(write(i) for i in range(10)), return_exceptions=True)
    assert isinstance(results[7], ValueError)
    assert [r for n, r in enumerate(results) if n != 7] == [i * 2 for i in range(10) if i != 7]


async def test_a_failed_call_fails_its_callers_and_the_next_call_goes_on() -> None:
    run = Recorder(fail_calls=1)
    write = Coalescer(run)
    first = asyncio.create_task(write(0))
    await asyncio.sleep(0)  # the first call is in flight
    rest = [asyncio.create_task(write(i)) for i in range(1, 5)]
    with pytest.raises(ConnectionError):
        await first
    assert await asyncio.gather(*rest) == [2, 4, 6, 8]


async def test_a_cancelled_caller_leaves_the_others_their_results() -> None:
    run = Recorder()
    write = Coalescer(run)
    first = asyncio.create_task(write(0))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(write(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    waiting[2].cancel()
    assert await first == 0
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert [r for n, r in enumerate(results) if n != 2] == [2, 4, 8, 10]


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _new_face(face_id: int) -> NewFace:
    face = Face(
        id=face_id,
        bbox=BBox(1, 2, 30, 40),
        meta=f"face {face_id}",
        galleries=("g",),
        photo="",
        photo_hash="",
        timestamp=dt.datetime.now(dt.UTC),
        thumbnail="",
        normalized="",
    )
    return NewFace(face, b"\0" * 512)


async def test_concurrent_adds_share_the_stores_writes(mongo_server: str, mongo_db: str) -> None:
    commands = Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_server, tz_aware=True, event_listeners=[commands]
    )
    try:
        store = MongoFaceStore(client, f"{mongo_db}-{uuid.uuid4().hex[:8]}")
        blocks = await asyncio.gather(*(store.next_ids(n % 3 + 1) for n in range(24)))
        ids = [i for block in blocks for i in block]
        # Consecutive blocks of the sizes asked for, in the callers' order, with no gaps.
        assert ids == list(range(1, len(ids) + 1))
        assert [len(b) for b in blocks] == [n % 3 + 1 for n in range(24)]
        await asyncio.gather(*(store.insert_pending([_new_face(i) for i in b]) for b in blocks))
        await asyncio.gather(*(store.activate(b) for b in blocks))
        assert set(await store.get_many(ids)) == set(ids)
        # 24 callers of each write: far fewer round trips than callers.
        for name in ("findAndModify", "insert", "update"):
            assert 1 <= commands.names.count(name) <= 4, (name, commands.names)

        # A record refused (its id is taken) fails its own caller only.
        fresh = await store.next_ids(2)
        outcomes = await asyncio.gather(
            store.insert_pending([_new_face(fresh[0])]),
            store.insert_pending([_new_face(ids[0])]),
            store.insert_pending([_new_face(fresh[1])]),
            return_exceptions=True,
        )
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], ServiceUnavailable)
        await store.activate(fresh)
        assert set(await store.get_many(fresh)) == set(fresh)
    finally:
        await client.close()
