"""Finding out, through the API, what became of images whose POST outcome was never recorded.

An image is left `sending` when the run died after committing the mark and before committing
the answer (kill -9, power loss), or when the answer never came (a timeout). The server may
have enrolled it, or not, or may still be working on it. Posting it again could enrol it twice,
so first it is looked for among the gallery's faces:

- only faces newer than the run's watermark (the newest face id when the run began: ids only
  grow) are read, newest first, through the ordinary paged listing;
- a face is the image's when its `photo_hash` (the MD5 of the photo bytes, which both FindFace
  and FaceGrid return) and its meta equal those the job recorded when marking the image, and no
  other image of the job has claimed it;
- the runner never has two images with the same bytes and meta in flight at once, so a face
  that matches belongs to exactly one sending image.

An image not found is only declared unsent once `settle` seconds have passed since the look-up
began (so after any POST of the dead client left): until then the server may still be finishing
a request whose client has gone. Images
found are recorded as done with those face ids; the others go back to pending.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

from facegrid.bulk.client import FaceApi
from facegrid.bulk.job import Image, Job, Outcome

# How often the listing is read again while waiting for the server to settle.
POLL_SECONDS = 1.0


async def resolve(
    job: Job,
    api: FaceApi,
    sending: Sequence[Image],
    settle: float,
    clock: Callable[[], float] = time.time,
) -> tuple[list[tuple[int, Outcome]], list[int]]:
    """(found: image id and the faces it enrolled, missing: image ids proved not enrolled)."""
    if not sending:
        return [], []
    # The lowest watermark of the runs that sent them, per gallery.
    watermarks: dict[str, int] = {}
    for run_id in {image.run for image in sending if image.run is not None}:
        run = job.run(run_id)
        watermarks[run.gallery] = min(watermarks.get(run.gallery, run.watermark), run.watermark)
    # From now, not from the marks: a mark is committed before its POST leaves (which may wait
    # behind other uploads), and every POST of a dead or timed-out client left before now.
    deadline = clock() + settle
    claimed = job.claimed_faces()
    found: dict[int, Outcome] = {}
    while True:
        faces: dict[tuple[str, str], list[int]] = defaultdict(list)
        for gallery, watermark in watermarks.items():
            async for face in api.faces_above(gallery, watermark):
                if face.id not in claimed:
                    faces[(face.photo_hash, face.meta)].append(face.id)
        for image in sending:
            if image.id in found:
                continue
            ids = faces.get((image.md5 or "", image.meta))
            if ids:
                found[image.id] = Outcome(faces=tuple(sorted(ids)))
                claimed.update(ids)
        if len(found) == len(sending) or clock() >= deadline:
            break
        await asyncio.sleep(min(POLL_SECONDS, max(deadline - clock(), 0.0)))
    missing = [image.id for image in sending if image.id not in found]
    return sorted(found.items()), missing
