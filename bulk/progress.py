"""The counts of a run, its live progress line and its closing summary, worded as
findface-mass-enroll words them so that scripts reading its output keep working:

    [33/2055] faces processed (4 succeeded, 9 failed, 10 skipped). 2.14 rps. [00:00:17/00:16:04]

The last field is the time elapsed and the whole run's estimated time, as the reference shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TextIO

RULE = "-" * 40


@dataclass
class Tally:
    total: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def processed(self) -> int:
        return self.skipped + self.succeeded + self.failed

    def elapsed(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.started

    def rate(self, now: float | None = None) -> float:
        elapsed = self.elapsed(now)
        return (self.succeeded + self.failed) / elapsed if elapsed > 0 else 0.0


def clock_time(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(tally: Tally, now: float | None = None) -> str:
    elapsed, rate = tally.elapsed(now), tally.rate(now)
    left = tally.total - tally.processed
    estimate = clock_time(elapsed + left / rate) if rate > 0 else "--:--:--"
    return (
        f"[{tally.processed}/{tally.total}] faces processed ({tally.succeeded} succeeded, "
        f"{tally.failed} failed, {tally.skipped} skipped). {rate:.2f} rps. "
        f"[{clock_time(elapsed)}/{estimate}]"
    )


def summary(tally: Tally, failed_hint: bool) -> str:
    lines = [
        f"{RULE} Summary {RULE}",
        f"Found {tally.total} images in job file",
        f"Skipped {tally.skipped} already processed images",
        f"Successfully processed {tally.succeeded} images",
        f"Failed to process {tally.failed} images",
        f"Took {clock_time(tally.elapsed())} ({tally.rate():.2f} images/s)",
    ]
    if failed_hint:
        lines.append("Correct the cause and run again with --failed to retry the failed images")
    return "\n".join(lines)


class Printer:
    """Writes the progress line: rewritten in place on a terminal, one line each time else."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._open = False

    def show(self, tally: Tally) -> None:
        if self._tty:
            self._out.write("\r\x1b[K" + progress_line(tally))
            self._open = True
        else:
            self._out.write(progress_line(tally) + "\n")
        self._out.flush()

    def end(self) -> None:
        if self._open:
            self._out.write("\n")
            self._open = False
        self._out.flush()
