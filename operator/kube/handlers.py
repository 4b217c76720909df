"""The operator's reconcilers and their kopf handlers.

FaceGallery: placed on the first `shards` pods of the indexer StatefulSet (scaled out first when
it has fewer); a change of shards, or more faces than shards x capacityPerShard, starts an
online reshard whose stage and progress live in status, so a restarted operator resumes it.
Deleting one drops its vectors on every shard before kopf releases the finalizer.

Camera: each detector pool gets a worker Deployment of ceil(cameras / detectors-max) pods, and
every streaming camera a worker pod, rebalanced as pods come and go. Workers ask the control
plane for the cameras assigned to them by pod name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import kopf
from prometheus_client import CollectorRegistry

from facegrid.operator.core.cameras import assign, workers_needed
from facegrid.operator.core.placement import (
    AlreadyExists,
    NotFound,
    Placement,
    ShardRef,
    Unavailable,
    rebalance,
)
from facegrid.operator.core.resources import (
    GROUP,
    POOL_LABEL,
    VERSION,
    Body,
    condition,
    deployment_name,
    detectors_max,
    gallery_name,
    live_workers,
    merge_conditions,
    placement_of,
    placement_status,
    pool_of,
    shard_refs,
    shards_wanted,
    streams,
    worker_deployment,
)
from facegrid.operator.kube.api import KubeApi
from facegrid.operator.kube.metrics import OperatorMetrics
from facegrid.operator.kube.plane import (
    CAMERAS,
    GALLERIES,
    KubeControlPlane,
    first_placement,
    older,
)
from facegrid.operator.reshard import SlotMover
from facegrid.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

TEMPLATE_HASH = "facegrid.io/template-hash"


class Reconciler:
    def __init__(
        self,
        settings: OperatorSettings,
        api: KubeApi,
        mover: SlotMover,
        template: dict[str, Any],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.metrics = OperatorMetrics(registry or CollectorRegistry())
        self.settings = settings
        self.api = api
        self.mover = mover
        self.template = template
        self.plane = KubeControlPlane(api, self.shards_for, self.default_shards, self.drop_gallery)
        self._pool_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Kubernetes events on a resource (kopf's poster once registered): reason, message.
        self.announce: Callable[[Body, str, str], None] = lambda body, reason, message: None
        self._scale_lock = asyncio.Lock()

    # -- index shards ---------------------------------------------------------------------------

    async def shards_for(self, count: int, followers: int = 1) -> tuple[ShardRef, ...]:
        """The first `count` shard pods, each with up to `followers` followers (no more than
        the deployment runs); their StatefulSets are scaled out first when they are smaller."""
        s = self.settings
        ranks = min(followers, s.indexer_followers)
        async with self._scale_lock:
            for statefulset in [s.indexer_statefulset, *follower_sets(s, ranks)]:
                have = await self.api.statefulset_replicas(statefulset)
                if have < count:
                    log.info("scaling %s from %d to %d pods", statefulset, have, count)
                    await self.api.scale_statefulset(statefulset, count)
        return shard_refs(
            count,
            s.indexer_statefulset,
            s.indexer_service,
            s.indexer_port,
            address=s.shard_address,
            namespace=s.namespace,
            stride=s.indexer_port_stride,
            followers=ranks,
        )

    async def default_shards(self) -> int:
        if self.settings.default_shards:
            return self.settings.default_shards
        return max(1, await self.api.statefulset_replicas(self.settings.indexer_statefulset))

    # -- galleries ------------------------------------------------------------------------------

    async def _status(self, body: Body, status: dict[str, Any]) -> dict[str, Any]:
        """Patch a FaceGallery's status and take the answer in at once (kopf delivers the
        resulting event only after the running handler returns)."""
        patched = await self.api.patch_status(GALLERIES, body["metadata"]["name"], status)
        self.plane.observe_gallery("MODIFIED", patched)
        return patched

    async def reconcile_gallery(self, body: Body) -> None:
        spec = body.get("spec", {})
        status = body.get("status") or {}
        generation = body["metadata"].get("generation")
        refs = await self.shards_for(
            shards_wanted(spec, int(status.get("faceCount") or 0)),
            int(spec.get("replicasPerShard", 1)),
        )
        placement = placement_of(body)
        if placement is None:
            body = await self._status(body, first_placement(body, refs))
            await self.configure_shards(body, refs)
            return
        await self.configure_shards(body, (*placement.shards, *refs))
        stage = (status.get("resharding") or {}).get("stage")
        current = {placement.shards[i].name for i in placement.slot_shards}
        if stage or current != {r.name for r in refs}:
            await self.reshard(body, placement, refs)
            return
        if {s for s in placement.shards} != set(refs):
            # Same shards, other followers: readers learn the new copies with a new version.
            owners = [placement.shards[i].name for i in placement.slot_shards]
            await self._status(
                body, {"placement": placement_status(placement.version + 1, owners, refs)}
            )
        if status.get("observedGeneration") != generation or status.get("phase") != "Ready":
            await self._status(
                body,
                {
                    "phase": "Ready",
                    "observedGeneration": generation,
                    "conditions": merge_conditions(
                        status.get("conditions", []),
                        [condition("Ready", True, "Placed", "", generation)],
                    ),
                },
            )

    async def configure_shards(self, body: Body, shards: tuple[ShardRef, ...]) -> None:
        """spec.hnsw on every shard the gallery uses (or is moving to); none given: the
        shards' own settings apply."""
        hnsw = (body.get("spec") or {}).get("hnsw")
        if not hnsw:
            return
        m = int(hnsw.get("m", 24))
        efc = int(hnsw.get("efConstruction", 200))
        efs = int(hnsw.get("efSearch", 200))
        for shard in {s.name: s for s in shards}.values():
            await self.mover.configure(shard, gallery_name(body), m, efc, efs)

    async def reshard(self, body: Body, placement: Placement, refs: tuple[ShardRef, ...]) -> None:
        """Run (or resume) the stages: DualWrite, Copy, Verify, CutOver, Cleanup."""
        generation = body["metadata"].get("generation")
        status = body.get("status") or {}
        resharding = dict(status.get("resharding") or {})
        conditions = status.get("conditions", [])
        name = placement.gallery

        if not resharding:
            owners = [placement.shards[i].name for i in placement.slot_shards]
            target = rebalance(owners, [r.name for r in refs])
            every = {s.name: s for s in placement.shards} | {r.name: r for r in refs}
            moving = sum(1 for a, b in zip(owners, target, strict=True) if a != b)
            resharding = {
                "fromShards": len(set(owners)),
                "toShards": len(refs),
                "stage": "DualWrite",
                "slotsMoved": 0,
                "slotsTotal": moving,
                "target": placement_status(0, target, tuple(every.values()))["shards"],
            }
            log.info("gallery %s: resharding %s", name, resharding_summary(resharding))
            self.announce(body, "Resharding", resharding_summary(resharding))
            body = await self._status(
                body,
                {
                    "phase": "Resharding",
                    "placement": {"version": placement.version + 1},
                    "resharding": resharding,
                    "conditions": merge_conditions(
                        conditions,
                        [
                            condition(
                                "Resharding",
                                True,
                                "DualWrite",
                                resharding_summary(resharding),
                                generation,
                            )
                        ],
                    ),
                },
            )
            await asyncio.sleep(self.settings.settle_seconds)

        moving_placement = placement_of(body)
        if moving_placement is None or not moving_placement.target:
            # Cleanup stage: the placement already is the target; rebuild the move from status.
            moving_placement = self._cleanup_view(body)

        stage = resharding["stage"]
        if stage in ("DualWrite", "Copy"):
            await self._stage(body, resharding, "Copy")

            async def progress(done: int, total: int) -> None:
                resharding["slotsMoved"] = done
                self.metrics.reshard_slots.labels(name).set(total - done)
                await self._status(body, {"resharding": dict(resharding)})

            copied = await self.mover.copy_moving(moving_placement, progress)
            self.metrics.faces_moved.labels(name).inc(copied)
            stage = "Verify"
            await self._stage(body, resharding, stage)
        if stage == "Verify":
            removed, added = await self.mover.verify(moving_placement)
            log.info("gallery %s: verified (%d removed, %d added)", name, removed, added)
            self.announce(body, "Verified", f"targets fixed up: {removed} removed, {added} added")
            stage = "CutOver"
        if stage == "CutOver":
            target_owners = [moving_placement.shards[i].name for i in moving_placement.target]
            shards = moving_placement.shards
            previous = placement_status(
                0, [shards[i].name for i in moving_placement.slot_shards], shards
            )["shards"]
            resharding.update(stage="Cleanup", previous=previous)
            body = await self._status(
                body,
                {
                    "placement": placement_status(
                        moving_placement.version + 1, target_owners, shards
                    ),
                    "resharding": dict(resharding),
                },
            )
            await asyncio.sleep(self.settings.settle_seconds)
            stage = "Cleanup"
        if stage == "Cleanup":
            deleted = await self.mover.clean_up(self._cleanup_view(body))
            log.info("gallery %s: resharded; %d moved faces removed from old shards", name, deleted)
            self.announce(body, "Resharded", f"on {len(refs)} shards")
        await self._status(
            body,
            {
                "phase": "Ready",
                "observedGeneration": generation,
                "resharding": None,
                "conditions": merge_conditions(
                    conditions,
                    [
                        condition("Resharding", False, "Done", "", generation),
                        condition("Placed", True, "SlotsPlaced", "", generation),
                        condition("Ready", True, "Placed", "", generation),
                    ],
                ),
            },
        )

    def _cleanup_view(self, body: Body) -> Placement:
        """During Cleanup: the previous owners as the placement and the current as the target."""
        status = body["status"]
        resharding = status["resharding"]
        view = {
            **body,
            "status": {
                "placement": {
                    "version": status["placement"]["version"],
                    "shards": resharding["previous"],
                },
                "resharding": {"stage": "Copy", "target": status["placement"]["shards"]},
            },
        }
        placement = placement_of(view)
        assert placement is not None
        return placement

    async def _stage(self, body: Body, resharding: dict[str, Any], stage: str) -> None:
        resharding["stage"] = stage
        await self._status(
            body,
            {
                "resharding": dict(resharding),
                "conditions": merge_conditions(
                    (body.get("status") or {}).get("conditions", []),
                    [condition("Resharding", True, stage, resharding_summary(resharding))],
                ),
            },
        )

    async def drop_gallery(self, body: Body) -> None:
        placement = placement_of(body) or (
            self._cleanup_view(body)
            if ((body.get("status") or {}).get("resharding") or {}).get("previous")
            else None
        )
        if placement is None:
            return
        for shard in placement.shards:
            await self.mover.drop(shard, placement.gallery)

    async def count_faces(self, body: Body) -> None:
        """status.faceCount and shardHealth; scale out when the faces outgrow the shards."""
        placement = placement_of(body)
        if placement is None or placement.target:
            return
        owners = {placement.shards[i] for i in placement.slot_shards}
        total = live = 0
        for shard in owners:
            try:
                total += await self.mover.count(shard, placement.gallery)
                live += 1
            except Unavailable as e:
                log.warning("gallery %s: %s", placement.gallery, e)
        status = body.get("status") or {}
        self.metrics.faces.labels(placement.gallery).set(total)
        self.metrics.live_shards.labels(placement.gallery).set(live)
        health = {"live": live, "total": len(owners), "summary": f"{live}/{len(owners)}"}
        phase = "Ready" if live == len(owners) else "Degraded"
        if (
            status.get("faceCount") == total
            and status.get("shardHealth") == health
            and status.get("phase") == phase
        ):
            return
        body = await self._status(body, {"faceCount": total, "shardHealth": health, "phase": phase})
        if shards_wanted(body.get("spec", {}), total) > len(owners):
            await self.reconcile_gallery(body)

    # -- cameras --------------------------------------------------------------------------------

    async def reconcile_pool(self, pool: str) -> None:
        async with self._pool_locks[pool]:
            await self._reconcile_pool(pool)

    async def _reconcile_pool(self, pool: str) -> None:
        bodies = [b for b in self.plane.camera_bodies() if pool_of(b) == pool]
        name = deployment_name(self.template, pool)
        existing = await self.api.deployment(name)
        if not bodies:
            if existing is not None:
                log.info("pool %s has no cameras: deleting %s", pool, name)
                await self.api.delete_deployment(name)
            return
        most = detectors_max(self.template, pool)
        streaming = sorted(b["metadata"]["name"] for b in bodies if streams(b))
        replicas = workers_needed(len(streaming), most)
        desired = worker_deployment(self.template, pool, replicas, self.api.namespace)
        digest = hashlib.sha256(json.dumps(desired["spec"]["template"], sort_keys=True).encode())
        desired["metadata"].setdefault("annotations", {})[TEMPLATE_HASH] = digest.hexdigest()[:16]
        if existing is None:
            await self.api.create_deployment(desired)
            for body in bodies:
                self.announce(body, "WorkerPool", f"created {name} with {replicas} pod(s)")
        elif (existing.get("spec") or {}).get("replicas") != replicas or (
            (existing.get("metadata") or {}).get("annotations") or {}
        ).get(TEMPLATE_HASH) != desired["metadata"]["annotations"][TEMPLATE_HASH]:
            await self.api.patch_deployment(
                name, {"metadata": desired["metadata"], "spec": desired["spec"]}
            )
        workers = live_workers(await self.api.pods(POOL_LABEL, pool), pool)
        current = {
            b["metadata"]["name"]: str((b.get("status") or {}).get("workerPod") or "")
            for b in bodies
        }
        assignment = assign(streaming, workers, current, most)
        self.metrics.workers.labels(pool).set(replicas)
        self.metrics.waiting.labels(pool).set(
            sum(1 for c in streaming if assignment.get(c) is None)
        )
        for body in bodies:
            name = body["metadata"]["name"]
            # The newest state seen: a worker's report may have landed during the awaits above.
            latest = self.plane.camera_body(name)
            if latest is not None:
                await self._camera_status(latest, assignment.get(name), pool)

    async def _camera_status(self, body: Body, worker: str | None, pool: str) -> None:
        status = body.get("status") or {}
        spec = body.get("spec", {})
        generation = body["metadata"].get("generation")
        if not spec.get("enabled", True):
            phase, assigned = "Disabled", condition("Assigned", False, "Disabled", "", generation)
        elif not spec.get("url"):
            phase = "Disabled"
            assigned = condition(
                "Assigned", False, "NoStream", "faces come from an external detector"
            )
        elif worker is None:
            phase = "Pending"
            assigned = condition(
                "Assigned",
                False,
                "NoWorker",
                f"waiting for a worker pod of pool {pool}",
                generation,
            )
        else:
            # What the worker reported stands while the camera stays on it.
            keep = status.get("workerPod") == worker and status.get("phase") in (
                "Streaming",
                "Reconnecting",
                "Refused",
            )
            phase = status["phase"] if keep else "Assigned"
            assigned = condition("Assigned", True, "WorkerPod", worker, generation)
        if (
            status.get("phase") == phase
            and (status.get("workerPod") or None) == worker
            and status.get("observedGeneration") == generation
        ):
            return
        patched = await self.api.patch_status(
            CAMERAS,
            body["metadata"]["name"],
            {
                "phase": phase,
                "workerPod": worker,
                "observedGeneration": generation,
                "conditions": merge_conditions(status.get("conditions", []), [assigned]),
            },
        )
        self.plane.observe_camera("MODIFIED", patched)

    # -- start-up -------------------------------------------------------------------------------

    async def warm(self) -> None:
        """Load every gallery and camera before serving, and make sure `default` exists."""
        for body in await self.api.list_all(GALLERIES):
            self.plane.observe_gallery(None, body)
        for body in await self.api.list_all(CAMERAS):
            self.plane.observe_camera(None, body)
        if "default" not in {r.name for r in await self.plane.list_galleries()}:
            try:
                await self.plane.create_gallery("default")
            except AlreadyExists as e:  # raced with another replica or a kubectl apply
                log.info("default gallery: %s", e)


def follower_sets(settings: OperatorSettings, ranks: int) -> list[str]:
    """The follower StatefulSets of ranks 1..ranks: pod i of each follows primary pod i."""
    return [f"{settings.indexer_statefulset}-r{rank}" for rank in range(1, ranks + 1)]


def resharding_summary(resharding: dict[str, Any]) -> str:
    return (
        f"{resharding['fromShards']} -> {resharding['toShards']} shards, "
        f"{resharding.get('slotsMoved', 0)}/{resharding['slotsTotal']} slots copied"
    )


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    """Attach the handlers to a kopf registry (one per operator, so tests run their own)."""
    r = reconciler
    # kopf.info takes plain dicts too (it reads apiVersion, kind and metadata from them).
    r.announce = lambda body, reason, message: kopf.info(
        dict(body),  # type: ignore[arg-type]
        reason=reason,
        message=message,
    )
    galleries = (GROUP, VERSION, GALLERIES)
    cameras = (GROUP, VERSION, CAMERAS)

    @kopf.on.event(*galleries, registry=registry)
    async def gallery_seen(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        r.plane.observe_gallery(event.get("type"), dict(body))

    @kopf.on.resume(*galleries, registry=registry)
    @kopf.on.create(*galleries, registry=registry)
    @kopf.on.update(*galleries, field="spec", registry=registry)
    async def gallery_changed(body: kopf.Body, **_: Any) -> None:
        try:
            await r.reconcile_gallery(_latest(r, body))
        except Unavailable as e:
            raise kopf.TemporaryError(str(e), delay=10) from e

    @kopf.on.delete(*galleries, registry=registry)
    async def gallery_deleted(body: kopf.Body, **_: Any) -> None:
        try:
            await r.drop_gallery(dict(body))
        except Unavailable as e:
            raise kopf.TemporaryError(f"dropping the gallery: {e}", delay=10) from e

    @kopf.timer(*galleries, interval=r.settings.stats_interval, registry=registry)
    async def gallery_counted(body: kopf.Body, **_: Any) -> None:
        with contextlib.suppress(NotFound):  # deleted meanwhile
            await r.count_faces(_latest(r, body))

    @kopf.on.event(*cameras, registry=registry)
    async def camera_seen(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        r.plane.observe_camera(event.get("type"), dict(body))
        await r.reconcile_pool(pool_of(body))

    @kopf.on.event("", "v1", "pods", labels={POOL_LABEL: kopf.PRESENT}, registry=registry)
    async def worker_seen(body: kopf.Body, **_: Any) -> None:
        pool = (body.get("metadata", {}).get("labels") or {}).get(POOL_LABEL)
        if pool:
            await r.reconcile_pool(str(pool))


def _latest(r: Reconciler, body: kopf.Body) -> dict[str, Any]:
    """The freshest copy of a gallery: the plane's when we patched it after kopf's event."""
    theirs = dict(body)
    for mine in r.plane.gallery_bodies():
        if mine["metadata"]["name"] == theirs["metadata"]["name"] and older(theirs, mine):
            return {**theirs, "status": mine.get("status")}
    return theirs
