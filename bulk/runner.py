"""`mass-enroll run`: POST every pending image of a job, `parallel` at a time, exactly once.

The order of writes is what makes a crash at any instant harmless:
1. a chunk of images is marked `sending` (with the MD5 of the bytes and the run) and committed,
   in one transaction, before any of them is posted;
2. the POSTs go out over `parallel` keep-alive connections; FaceGrid's extractor merges the
   concurrent requests' faces into model batches, so concurrency is also its fast path;
3. answers are committed in groups every `flush_interval` seconds: losing the last group to a
   crash costs only a look-up (`recovery.py`), never a second enrolment.

Images with the same bytes and meta are never in flight together, so that a face found by the
look-up belongs to exactly one image. A run begins by resolving the images an earlier run left
`sending`, and ends by resolving those whose answer never came (timeouts); images proved not
enrolled are sent again; one that gets no answer `max_attempts` times in a run fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from facegrid.bulk import recovery
from facegrid.bulk.client import ApiUnusable, FaceApi, Uncertain, Unsent, Wanted
from facegrid.bulk.job import DONE, FAILED, PENDING, SENDING, Image, Job, JobError, Outcome
from facegrid.bulk.progress import Printer, Tally

FILE_ERROR = "FILE_ERROR"
UNCERTAIN = "NO_ANSWER"


@dataclass(frozen=True)
class RunOptions:
    api: str
    token: str
    gallery: str = "default"
    parallel: int = 10
    failed: bool = False
    wanted: Wanted = field(default_factory=Wanted)
    stats_interval: float = 1.0
    # Seconds the server may still finish a request whose client has gone (its own timeouts).
    settle: float = 30.0
    max_attempts: int = 3
    flush_interval: float = 0.5
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.parallel < 1:
            raise ValueError("--parallel must be at least 1")
        if self.stats_interval < 0 or self.settle < 0 or self.timeout <= 0:
            raise ValueError("--stats-interval and --settle must not be negative")
        if self.max_attempts < 1:
            raise ValueError("--max-attempts must be at least 1")


@dataclass
class _Photo:
    image: Image
    data: bytes
    md5: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.md5, self.image.meta)


@contextlib.contextmanager
def exclusive(job_path: Path) -> Iterator[None]:
    """One run per job file at a time; the lock goes with the process, however it ends."""
    with open(job_path.with_name(job_path.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobError(f"another run is using {job_path}") from None
        yield


def _load(image: Image) -> _Photo | Outcome:
    try:
        data = Path(image.path).read_bytes()
    except OSError as e:
        return Outcome(code=FILE_ERROR, reason=f"{type(e).__name__}: {e.strerror or e}")
    return _Photo(image, data, hashlib.md5(data, usedforsecurity=False).hexdigest())


class Runner:
    def __init__(self, job: Job, options: RunOptions, out: TextIO, api: FaceApi) -> None:
        self.job = job
        self.options = options
        self.api = api
        self.tally = Tally()
        self._printer = Printer(out)
        self._run_id = 0
        # (md5, meta) of images committed as `sending` and not yet committed otherwise.
        self._in_flight: Counter[tuple[str, str]] = Counter()
        self._answers: list[tuple[int, Outcome]] = []
        self._unsent: list[int] = []
        self._uncertain: list[int] = []
        self._keys: dict[int, tuple[str, str]] = {}
        self._no_answer: Counter[int] = Counter()
        self._progressed = False

    async def run(self) -> Tally:
        options, job = self.options, self.job
        await self.api.check_gallery(options.gallery)
        if options.failed:
            job.retry_failed()
        await self._resolve(list(job.images(SENDING)), count=False)
        self.tally = Tally(total=job.count(), skipped=job.count(DONE, FAILED))
        watermark = await self.api.newest_face(options.gallery)
        self._run_id = job.start_run(
            options.api, options.gallery, options.wanted.mf_selector or "", watermark
        )
        stats = asyncio.create_task(self._stats())
        try:
            while pending := job.ids(PENDING):
                self._progressed = False
                await self._pass(pending)
                if self._uncertain:
                    self._flush()
                    uncertain, self._uncertain = self._uncertain, []
                    await self._resolve(job.get(uncertain), count=True)
                if not self._progressed:
                    raise ApiUnusable("the API is unreachable; the job is kept, run it again")
        finally:
            stats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stats
            self._flush()
            if options.stats_interval:
                self._printer.show(self.tally)
            self._printer.end()
        return self.tally

    async def _resolve(self, sending: list[Image], *, count: bool) -> None:
        """Look up images left `sending`: found ones are done, the others pending again (or
        failed once they were sent max_attempts times)."""
        found, missing = await recovery.resolve(self.job, self.api, sending, self.options.settle)
        self.job.record(found)
        by_id = {image.id: image for image in sending}
        # Only answers that never came count against an image; a killed run's do not.
        exhausted = {i for i in missing if self._no_answer[i] >= self.options.max_attempts}
        self.job.record(
            [(i, Outcome(code=UNCERTAIN, reason="no answer from the API")) for i in exhausted]
        )
        self.job.release([i for i in missing if i not in exhausted])
        if count:  # resolved within this run: what it settled is this run's work
            self.tally.succeeded += len(found)
            self.tally.failed += len(exhausted)
        for image_id in by_id:
            key = self._keys.pop(image_id, None)
            if key is not None:
                self._in_flight[key] -= 1

    async def _pass(self, pending: Sequence[int]) -> None:
        queue: asyncio.Queue[_Photo | None] = asyncio.Queue(maxsize=self.options.parallel)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.options.parallel)]
        flusher = asyncio.create_task(self._flusher())
        try:
            chunk = self.options.parallel
            for start in range(0, len(pending), chunk):
                await self._send_chunk(pending[start : start + chunk], queue)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            for task in (*workers, flusher):
                task.cancel()
            await asyncio.gather(*workers, flusher, return_exceptions=True)
            self._flush()

    async def _send_chunk(self, ids: Sequence[int], queue: asyncio.Queue[_Photo | None]) -> None:
        images = self.job.get(ids)
        loaded = await asyncio.to_thread(lambda: [_load(i) for i in images])
        unreadable = [
            (image_id, item)
            for image_id, item in zip(ids, loaded, strict=True)
            if isinstance(item, Outcome)
        ]
        if unreadable:
            self.job.record(unreadable)
            self.tally.failed += len(unreadable)
            self._progressed = True
        ready: list[_Photo] = []
        for item in loaded:
            # An image with the same bytes and meta as one in flight waits for a later pass.
            if isinstance(item, _Photo) and not self._in_flight[item.key]:
                ready.append(item)
                self._in_flight[item.key] += 1
        self.job.mark_sending([(p.image.id, p.md5) for p in ready], self._run_id)
        for photo in ready:
            self._keys[photo.image.id] = photo.key
            await queue.put(photo)

    async def _worker(self, queue: asyncio.Queue[_Photo | None]) -> None:
        options = self.options
        while (photo := await queue.get()) is not None:
            name = Path(photo.image.path).name
            result = await self.api.enroll(
                photo.data, name, photo.image.meta, options.gallery, options.wanted
            )
            if isinstance(result, Outcome):
                self._progressed = True
                self._answers.append((photo.image.id, result))
                if result.ok:
                    self.tally.succeeded += 1
                else:
                    self.tally.failed += 1
            elif isinstance(result, Uncertain):
                self._progressed = True
                self._uncertain.append(photo.image.id)
                self._no_answer[photo.image.id] += 1
            else:
                assert isinstance(result, Unsent)
                self._unsent.append(photo.image.id)
                await asyncio.sleep(1.0)  # the server is down or busy: do not spin

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.options.flush_interval)
            self._flush()

    def _flush(self) -> None:
        answers, self._answers = self._answers, []
        unsent, self._unsent = self._unsent, []
        if answers:
            self.job.record(answers)
        if unsent:
            self.job.release(unsent)
        for image_id in (*(i for i, _ in answers), *unsent):
            key = self._keys.pop(image_id, None)
            if key is not None:
                self._in_flight[key] -= 1

    async def _stats(self) -> None:
        if not self.options.stats_interval:
            return
        while True:
            self._printer.show(self.tally)
            await asyncio.sleep(self.options.stats_interval)


async def run_job(job_path: Path, options: RunOptions, out: TextIO) -> Tally:
    with exclusive(job_path), Job(job_path) as job:
        api = FaceApi(
            options.api, options.token, parallel=options.parallel, timeout=options.timeout
        )
        try:
            return await Runner(job, options, out, api).run()
        finally:
            await api.aclose()
