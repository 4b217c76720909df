"""The live progress line of a reindex or a check, and the time formats of its summary:

    reindex default: 41000/100000 faces (41.0%), 6120 faces/s, elapsed 00:00:06, ETA 00:00:09

Rewritten in place on a terminal; on anything else (a log, a pipe) one line every `interval`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


def clock_time(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(
        self,
        label: str,
        total: int,
        out: TextIO | None,
        *,
        done: int = 0,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """done: faces already done before this run (a resumed reindex); they count towards
        done/total but not towards the rate."""
        self.label = label
        self.total = total
        self.done = done
        self._resumed = done
        self._out = out
        self._tty = out is not None and out.isatty()
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._shown = self._started
        self._open = False

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return (self.done - self._resumed) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        left = max(self.total - self.done, 0)
        eta = clock_time(left / rate) if rate > 0 else "--:--:--"
        share = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{self.label}: {self.done}/{self.total} faces ({share:.1f}%), {rate:.0f} faces/s, "
            f"elapsed {clock_time(self.elapsed)}, ETA {eta}"
        )

    def advance(self, count: int) -> None:
        self.done += count
        now = self._clock()
        if now - self._shown >= self._interval:
            self._shown = now
            self._show()

    def _show(self) -> None:
        if self._out is None:
            return
        if self._tty:
            self._out.write("\r\x1b[K" + self.line())
            self._open = True
        else:
            self._out.write(self.line() + "\n")
        self._out.flush()

    def close(self) -> None:
        """Show the final line and end it."""
        self._show()
        if self._out is not None and self._open:
            self._out.write("\n")
            self._out.flush()
            self._open = False
