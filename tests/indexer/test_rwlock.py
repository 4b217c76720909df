"""The shard's readers-writer lock: exclusive writes, and nobody starves."""

from __future__ import annotations

import threading
import time

from facegrid.indexer.core.rwlock import ReadWriteLock


def _hammer(lock: ReadWriteLock, mode: str, stop: threading.Event, hold: float) -> None:
    while not stop.is_set():
        with getattr(lock, mode)():
            time.sleep(hold)


def test_a_busy_writer_does_not_starve_readers() -> None:
    """The graph builder takes the write lock again as soon as it lets go."""
    lock, stop = ReadWriteLock(), threading.Event()
    writer = threading.Thread(target=_hammer, args=(lock, "write", stop, 0.005))
    writer.start()
    waits: list[float] = []

    def reads() -> None:
        for _ in range(30):
            started = time.monotonic()
            with lock.read():
                waits.append(time.monotonic() - started)

    reader = threading.Thread(target=reads)
    reader.start()
    reader.join(timeout=5)
    starved = reader.is_alive()
    stop.set()
    writer.join()
    reader.join()
    assert not starved, "reads never got the lock while the writer kept taking it"
    assert max(waits) < 0.1, max(waits)  # one write (5 ms) at most, plus scheduling


def test_a_busy_writer_does_not_starve_another_writer() -> None:
    """Client adds wait for one builder step at most, not for the builder to run dry."""
    lock, stop = ReadWriteLock(), threading.Event()
    builder = threading.Thread(target=_hammer, args=(lock, "write", stop, 0.005))
    builder.start()
    waits: list[float] = []

    def writes() -> None:
        for _ in range(30):
            started = time.monotonic()
            with lock.write():
                waits.append(time.monotonic() - started)

    client = threading.Thread(target=writes)
    client.start()
    client.join(timeout=5)
    starved = client.is_alive()
    stop.set()
    builder.join()
    client.join()
    assert not starved, "a writer never got the lock while another kept taking it"
    assert max(waits) < 0.1, max(waits)


def test_busy_readers_do_not_starve_a_writer() -> None:
    lock, stop = ReadWriteLock(), threading.Event()
    readers = [threading.Thread(target=_hammer, args=(lock, "read", stop, 0.005)) for _ in range(4)]
    for r in readers:
        r.start()
    waits = []
    for _ in range(20):
        started = time.monotonic()
        with lock.write():
            waits.append(time.monotonic() - started)
    stop.set()
    for r in readers:
        r.join()
    assert max(waits) < 0.1, max(waits)


def test_writes_are_exclusive_and_reads_shared() -> None:
    lock = ReadWriteLock()
    state = {"readers": 0, "writers": 0, "max_readers": 0, "violations": 0}
    guard = threading.Lock()

    def reader() -> None:
        for _ in range(200):
            with lock.read():
                with guard:
                    state["readers"] += 1
                    state["max_readers"] = max(state["max_readers"], state["readers"])
                    state["violations"] += state["writers"] > 0
                time.sleep(0.0001)
                with guard:
                    state["readers"] -= 1

    def writer() -> None:
        for _ in range(100):
            with lock.write():
                with guard:
                    state["writers"] += 1
                    state["violations"] += state["writers"] > 1 or state["readers"] > 0
                time.sleep(0.0001)
                with guard:
                    state["writers"] -= 1

    threads = [threading.Thread(target=reader) for _ in range(4)]
    threads += [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state["violations"] == 0
    assert state["max_readers"] > 1
