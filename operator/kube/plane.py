"""The ControlPlane contract backed by FaceGallery and Camera resources.

Reads come from what the operator's watches last saw (kopf feeds every event to `observe_*`);
writes go to the Kubernetes API, and their answers are taken in at once, so a gallery created
through the REST API can be written to as soon as CreateGallery returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from facegrid.operator.core.cameras import CameraChange, Region
from facegrid.operator.core.placement import (
    SLOT_COUNT,
    AlreadyExists,
    NotFound,
    Placement,
    Refused,
    ShardRef,
    Unavailable,
    new_camera_id,
    rebalance,
    validate_gallery_name,
)
from facegrid.operator.core.records import (
    CameraRecord,
    CameraRefusal,
    CameraState,
    GalleryRecord,
    PlacementChange,
)
from facegrid.operator.core.resources import (
    DEFAULT_POOL,
    GROUP,
    VERSION,
    Body,
    camera_record,
    camera_refusal_status,
    camera_state_status,
    check_pool,
    condition,
    gallery_name,
    gallery_record,
    merge_conditions,
    placement_of,
    placement_status,
    region_text,
    resource_name,
)
from facegrid.operator.kube.api import KubeApi

log = logging.getLogger(__name__)

GALLERIES = "facegalleries"
CAMERAS = "cameras"
FINALIZER = "facegrid.io/operator"

ShardsFor = Callable[[int, int], Awaitable[tuple[ShardRef, ...]]]
"""The first n shard pods with up to m followers each (scaling the indexer out first)."""


def first_placement(body: Body, refs: tuple[ShardRef, ...]) -> dict[str, Any]:
    """The status of a newly placed gallery."""
    owners = rebalance([None] * SLOT_COUNT, [r.name for r in refs])
    generation = body["metadata"].get("generation")
    return {
        "phase": "Ready",
        "observedGeneration": generation,
        "placement": placement_status(1, owners, refs),
        "shardHealth": {
            "live": len(refs),
            "total": len(refs),
            "summary": f"{len(refs)}/{len(refs)}",
        },
        "conditions": [
            condition(
                "Placed", True, "SlotsPlaced", f"1024 slots on {len(refs)} shard(s)", generation
            ),
            condition("Ready", True, "Placed", "", generation),
            condition("Resharding", False, "Idle", "", generation),
        ],
    }


class KubeControlPlane:
    def __init__(
        self,
        api: KubeApi,
        shards_for: ShardsFor,
        default_shards: Callable[[], Awaitable[int]],
        drop: Callable[[Body], Awaitable[None]],
    ):
        self._api = api
        self._drop = drop
        self._shards_for = shards_for
        self._default_shards = default_shards
        self._galleries: dict[str, dict[str, Any]] = {}  # by gallery (REST) name
        self._cameras: dict[str, dict[str, Any]] = {}  # by resource name = camera id
        self._watchers: set[asyncio.Queue[PlacementChange]] = set()

    # -- what the watches see -------------------------------------------------------------------

    def observe_gallery(self, event: str | None, body: Body) -> None:
        name = gallery_name(body)
        before = self._galleries.get(name)
        if event == "DELETED" or body["metadata"].get("deletionTimestamp"):
            if self._galleries.pop(name, None) is not None:
                placement = placement_of(before) if before else None
                if placement is not None:
                    self._publish(PlacementChange(True, placement))
            return
        if before is not None and older(body, before):
            return
        self._galleries[name] = dict(body)
        placement = placement_of(body)
        previous = placement_of(before) if before else None
        if placement is not None and placement != previous:
            self._publish(PlacementChange(False, placement))

    def observe_camera(self, event: str | None, body: Body) -> None:
        name = body["metadata"]["name"]
        before = self._cameras.get(name)
        if event == "DELETED":
            self._cameras.pop(name, None)
        elif before is None or not older(body, before):
            self._cameras[name] = dict(body)

    def gallery_bodies(self) -> list[dict[str, Any]]:
        return list(self._galleries.values())

    def camera_bodies(self) -> list[dict[str, Any]]:
        return list(self._cameras.values())

    def camera_body(self, name: str) -> dict[str, Any] | None:
        return self._cameras.get(name)

    def _publish(self, change: PlacementChange) -> None:
        for queue in self._watchers:
            queue.put_nowait(change)

    # -- galleries ------------------------------------------------------------------------------

    def _record(self, name: str) -> GalleryRecord:
        body = self._galleries.get(name)
        if body is None:
            raise NotFound(f"gallery {name!r} does not exist")
        record = gallery_record(body)
        if record is None:
            raise Unavailable(f"gallery {name!r} is not placed on shards yet")
        return record

    async def create_gallery(self, name: str) -> GalleryRecord:
        validate_gallery_name(name)
        if name in self._galleries:
            raise AlreadyExists(f"gallery {name!r} already exists")
        shards = await self._default_shards()
        body = await self._api.create(
            GALLERIES,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "FaceGallery",
                # The operator's finalizer from the start: kopf would add it a moment later,
                # and a delete in between would skip dropping the vectors.
                "metadata": {"name": resource_name(name), "finalizers": [FINALIZER]},
                "spec": {"galleryName": name, "shards": shards},
            },
        )
        refs = await self._shards_for(shards, 1)  # the CRD's default replicasPerShard
        placed = await self._api.patch_status(
            GALLERIES, body["metadata"]["name"], first_placement(body, refs)
        )
        self.observe_gallery("ADDED", placed)
        return self._record(name)

    async def get_gallery(self, name: str) -> GalleryRecord:
        return self._record(name)

    async def list_galleries(self) -> list[GalleryRecord]:
        records = (gallery_record(b) for b in self._galleries.values())
        return sorted((r for r in records if r is not None), key=lambda r: r.name)

    async def delete_gallery(self, name: str) -> None:
        """Drop the gallery's vectors on every shard, then delete the resource (whose finalizer
        drops them again, for deletes that come from kubectl). If a shard does not answer, the
        gallery stays and the delete can be retried."""
        if name == "default":
            raise Refused("the default gallery cannot be deleted")
        body = self._galleries.get(name)
        if body is None:
            raise NotFound(f"gallery {name!r} does not exist")
        await self._drop(body)
        await self._api.delete(GALLERIES, body["metadata"]["name"])
        self.observe_gallery("DELETED", body)

    async def placement(self, gallery: str) -> Placement:
        return self._record(gallery).placement

    async def watch(self) -> AsyncIterator[PlacementChange]:
        queue: asyncio.Queue[PlacementChange] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            for record in await self.list_galleries():
                yield PlacementChange(False, record.placement)
            while True:
                yield await queue.get()
        finally:
            self._watchers.discard(queue)

    # -- cameras --------------------------------------------------------------------------------

    def _camera(self, camera_id: str) -> dict[str, Any]:
        body = self._cameras.get(camera_id)
        if body is None:
            raise NotFound(f"camera {camera_id!r} does not exist")
        return body

    async def create_camera(
        self,
        url: str,
        detector: str,
        meta: str,
        active: bool,
        rot: Region | None = None,
        roi: Region | None = None,
    ) -> CameraRecord:
        spec: dict[str, Any] = {
            "url": url,
            "detector": check_pool(detector or DEFAULT_POOL),
            "meta": meta,
            "enabled": active,
        }
        for key, region in (("rot", rot), ("roi", roi)):
            if region is not None:
                spec[key] = region_text(region)
        body = await self._api.create(
            CAMERAS,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Camera",
                "metadata": {"name": new_camera_id()},
                "spec": spec,
            },
        )
        self.observe_camera("ADDED", body)
        return camera_record(body)

    async def update_camera(self, camera_id: str, change: CameraChange) -> CameraRecord:
        self._camera(camera_id)
        spec: dict[str, Any] = {"rot": region_text(change.rot), "roi": region_text(change.roi)}
        if change.url is not None:
            spec["url"] = change.url
        if change.detector is not None:
            spec["detector"] = check_pool(change.detector or DEFAULT_POOL)
        if change.meta is not None:
            spec["meta"] = change.meta
        if change.active is not None:
            spec["enabled"] = change.active
        body = await self._api.patch(CAMERAS, camera_id, {"spec": spec})
        self.observe_camera("MODIFIED", body)
        return camera_record(body)

    async def get_camera(self, camera_id: str) -> CameraRecord:
        return camera_record(self._camera(camera_id))

    async def list_cameras(self, detector: str, worker: str = "") -> list[CameraRecord]:
        records = [camera_record(b) for b in self._cameras.values()]
        return sorted(
            (
                r
                for r in records
                if (not detector or r.detector == detector) and (not worker or r.worker == worker)
            ),
            key=lambda r: (r.created_at, r.id),
        )

    async def report_cameras(
        self, worker: str, states: list[CameraState], refused: list[CameraRefusal]
    ) -> None:
        """Show what the camera's worker reports in its status (phase Streaming, Reconnecting
        or Refused, frames/s, posts, last post, the Licensed condition); reports from a worker
        the camera is no longer assigned to are stale and ignored."""
        updates = [(s.id, camera_state_status(s)) for s in states]
        updates += [(r.id, camera_refusal_status(r)) for r in refused]
        for camera_id, update in updates:
            body = self._cameras.get(camera_id)
            if body is None:
                continue
            status = body.get("status") or {}
            if status.get("workerPod") != worker:
                continue
            if all(status.get(k) == v for k, v in update.items() if k != "conditions"):
                continue
            update["conditions"] = merge_conditions(
                status.get("conditions", []), update["conditions"]
            )
            patched = await self._api.patch_status(CAMERAS, camera_id, update)
            self.observe_camera("MODIFIED", patched)

    async def delete_camera(self, camera_id: str) -> None:
        self._camera(camera_id)
        await self._api.delete(CAMERAS, camera_id)
        self._cameras.pop(camera_id, None)


def older(body: Body, than: Body) -> bool:
    """Whether `body` is an older state than `than`: a watch event can arrive after the answer
    to our own later patch. resourceVersions are etcd revisions (integers) in practice; when
    they are not, nothing is taken as older."""
    mine = str(body["metadata"].get("resourceVersion") or "")
    theirs = str(than["metadata"].get("resourceVersion") or "")
    return mine.isdigit() and theirs.isdigit() and int(mine) < int(theirs)
