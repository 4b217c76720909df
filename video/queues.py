"""Bounded queues between the video worker's stages."""

from __future__ import annotations

import queue
from typing import TypeVar

T = TypeVar("T")


def put_latest(q: queue.Queue[T], item: T) -> int:
    """Put item without waiting: when q is full, the oldest waiting items give way. Returns how
    many were dropped."""
    dropped = 0
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except queue.Full:
            try:
                q.get_nowait()
                dropped += 1
            except queue.Empty:
                pass
