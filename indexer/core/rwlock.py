"""A readers-writer lock: searches share the shard, writes have it alone.

Phase-fair: a waiting writer holds off readers that arrive after it, and when a writer is done,
the readers already waiting go before the next writer. Writers go in the order they came. So
neither a stream of searches starves writes nor a busy graph builder (a writer that comes back
at once) starves searches or client writes: each waits for one write at most.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._readers_waiting = 0
        self._writing = False
        self._writers_waiting = 0
        # Set when a writer finishes with readers waiting: they enter before the next writer.
        self._readers_turn = False
        # Writers take tickets and enter in ticket order.
        self._next_ticket = 0
        self._serving = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._readers_waiting += 1
            while self._writing or (self._writers_waiting and not self._readers_turn):
                self._cond.wait()
            self._readers_waiting -= 1
            self._readers += 1
            if not self._readers_waiting:
                self._readers_turn = False
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._writers_waiting += 1
            while self._writing or self._readers or self._readers_turn or ticket != self._serving:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._serving += 1
                self._readers_turn = self._readers_waiting > 0
                self._cond.notify_all()
