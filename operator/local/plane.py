"""The local control plane's behaviour: galleries, cameras and placements on one machine.

Every gallery is placed on the configured shards. When the shard list changes between starts,
placements are recomputed and their version bumped; moving the vectors that change shards is
the resharding work of the indexer and operator, not done here.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

from facegrid.operator.core.cameras import CameraChange, Region
from facegrid.operator.core.placement import (
    DEFAULT_GALLERY,
    AlreadyExists,
    Placement,
    Refused,
    ShardRef,
    place,
    validate_gallery_name,
)
from facegrid.operator.core.records import (
    CameraRecord,
    CameraRefusal,
    CameraState,
    CameraStatus,
    GalleryRecord,
    PlacementChange,
)
from facegrid.operator.local.store import Store

log = logging.getLogger(__name__)

DropOnShard = Callable[[ShardRef, str], Awaitable[None]]


class LocalControlPlane:
    def __init__(self, store: Store, shards: tuple[ShardRef, ...], drop_on_shard: DropOnShard):
        self._store = store
        self._shards = shards
        self._drop_on_shard = drop_on_shard
        self._watchers: set[asyncio.Queue[PlacementChange]] = set()
        # The latest report of each camera's worker.
        self._reports: dict[str, CameraStatus] = {}

    async def start(self) -> None:
        """Make sure `default` exists and every placement matches the configured shards."""
        with contextlib.suppress(AlreadyExists):
            await self._store.insert_gallery(DEFAULT_GALLERY, place(DEFAULT_GALLERY, self._shards))
        for gallery in await self._store.list_galleries():
            if gallery.placement.shards != self._shards:
                moved = place(gallery.name, self._shards, gallery.placement.version + 1)
                await self._store.set_placement(gallery.name, moved)
                log.warning(
                    "gallery %s re-placed on %d shard(s) (placement version %d)",
                    gallery.name,
                    len(self._shards),
                    moved.version,
                )

    # -- galleries ------------------------------------------------------------------------------

    async def create_gallery(self, name: str) -> GalleryRecord:
        validate_gallery_name(name)
        record = await self._store.insert_gallery(name, place(name, self._shards))
        self._publish(PlacementChange(False, record.placement))
        return record

    async def get_gallery(self, name: str) -> GalleryRecord:
        return await self._store.get_gallery(name)

    async def list_galleries(self) -> list[GalleryRecord]:
        return await self._store.list_galleries()

    async def delete_gallery(self, name: str) -> None:
        """Drop the gallery's vectors on every shard, then the gallery itself.

        If a shard does not answer the gallery stays, so the delete can simply be retried.
        """
        if name == DEFAULT_GALLERY:
            raise Refused("the default gallery cannot be deleted")
        record = await self._store.get_gallery(name)
        await asyncio.gather(
            *(self._drop_on_shard(shard, name) for shard in record.placement.shards)
        )
        await self._store.delete_gallery(name)
        self._publish(PlacementChange(True, record.placement))

    # -- placements -----------------------------------------------------------------------------

    async def placement(self, gallery: str) -> Placement:
        return (await self._store.get_gallery(gallery)).placement

    async def watch(self) -> AsyncIterator[PlacementChange]:
        """Every current placement, then each change, until the caller stops iterating."""
        queue: asyncio.Queue[PlacementChange] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            for gallery in await self._store.list_galleries():
                yield PlacementChange(False, gallery.placement)
            while True:
                yield await queue.get()
        finally:
            self._watchers.discard(queue)

    def _publish(self, change: PlacementChange) -> None:
        for queue in self._watchers:
            queue.put_nowait(change)

    # -- cameras --------------------------------------------------------------------------------

    async def create_camera(
        self,
        url: str,
        detector: str,
        meta: str,
        active: bool,
        rot: Region | None = None,
        roi: Region | None = None,
    ) -> CameraRecord:
        """A camera; its url may be empty when an external detector posts its faces."""
        return await self._store.insert_camera(url, detector, meta, active, rot, roi)

    async def update_camera(self, camera_id: str, change: CameraChange) -> CameraRecord:
        return self._with_status(await self._store.update_camera(camera_id, change))

    async def get_camera(self, camera_id: str) -> CameraRecord:
        return self._with_status(await self._store.get_camera(camera_id))

    async def list_cameras(self, detector: str, worker: str = "") -> list[CameraRecord]:
        """The detector's cameras; one machine assigns none to workers, so `worker` is moot."""
        return [self._with_status(c) for c in await self._store.list_cameras(detector)]

    async def delete_camera(self, camera_id: str) -> None:
        await self._store.delete_camera(camera_id)
        self._reports.pop(camera_id, None)

    async def report_cameras(
        self, worker: str, states: list[CameraState], refused: list[CameraRefusal]
    ) -> None:
        """Kept in memory (they are only news, and renewed every reload): GetCamera and
        ListCameras show the latest with the time it came."""
        now = dt.datetime.now(dt.UTC)
        for state in states:
            self._reports[state.id] = CameraStatus(
                phase="Streaming" if state.streaming else "Reconnecting",
                worker=worker,
                frames_per_second=state.frames_per_second,
                posts=state.posts,
                last_post=state.last_post,
                reported_at=now,
            )
        for refusal in refused:
            self._reports[refusal.id] = CameraStatus(
                phase="Refused", worker=worker, reason=refusal.reason, reported_at=now
            )

    def _with_status(self, record: CameraRecord) -> CameraRecord:
        report = self._reports.get(record.id)
        return record if report is None else replace(record, status=report)
