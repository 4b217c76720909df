"""Where a request's time went, reported in a `Server-Timing` header.

Adapters record the time they spend waiting on a backend (`extract`, `search`, `db`, ...) into
the current request's tally; the app's middleware adds the header, with `gateway` for the time
left: the gateway's own share (parsing, shaping results, the event loop). Benchmarks read it.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

_tally: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "server_timing", default=None
)


def begin() -> tuple[contextvars.Token[dict[str, float] | None], dict[str, float]]:
    """Start the current request's tally; `end` with the token when the request is done."""
    tally: dict[str, float] = {}
    return _tally.set(tally), tally


def end(token: contextvars.Token[dict[str, float] | None]) -> None:
    _tally.reset(token)


def header(tally: dict[str, float], total: float) -> str:
    """The Server-Timing value: each backend's time, the gateway's own share and the total."""
    backends = sum(tally.values())
    parts = [f"{name};dur={seconds * 1000:.2f}" for name, seconds in sorted(tally.items())]
    parts.append(f"gateway;dur={max(total - backends, 0.0) * 1000:.2f}")
    parts.append(f"total;dur={total * 1000:.2f}")
    return ", ".join(parts)


@asynccontextmanager
async def timed(name: str) -> AsyncIterator[None]:
    """Count the time inside the block as waiting on `name` (no-op outside a request)."""
    tally = _tally.get()
    started = time.perf_counter()
    try:
        yield
    finally:
        if tally is not None:
            tally[name] = tally.get(name, 0.0) + time.perf_counter() - started
