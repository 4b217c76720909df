"""FaceGallery and Camera resources as the operator reads and writes them: pure functions.

From a resource's body to the records the ControlPlane contract serves, from a placement to the
status block that shows it, and from a detector pool to its worker Deployment. No Kubernetes
client here: these are tested on their own.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from facegrid.operator.core.cameras import Region
from facegrid.operator.core.placement import (
    SLOT_COUNT,
    InvalidRequest,
    Placement,
    ShardRef,
    parse_slot_ranges,
    slot_ranges,
)
from facegrid.operator.core.records import (
    CameraRecord,
    CameraRefusal,
    CameraState,
    CameraStatus,
    GalleryRecord,
)

GROUP = "facegrid.io"
VERSION = "v1"
POOL_LABEL = "facegrid.io/pool"
MANAGED_BY = {"app.kubernetes.io/managed-by": "facegrid-operator"}
DEFAULT_POOL = "default"
DUAL_WRITE_STAGES = ("DualWrite", "Copy", "Verify")

Body = Mapping[str, Any]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_REGION = re.compile(r"(\d+)x(\d+)\+(\d+)\+(\d+)")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> dt.datetime:
    if not text:
        return dt.datetime.now(dt.UTC)
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- galleries --------------------------------------------------------------------------------


def resource_name(gallery: str) -> str:
    """A FaceGallery's metadata.name for a REST gallery name (which may hold `_` and capitals).

    Names that are already DNS labels are kept; others get a readable stem and a hash, so two
    gallery names never share a resource.
    """
    if _DNS_LABEL.fullmatch(gallery):
        return gallery
    stem = re.sub(r"[^a-z0-9-]+", "-", gallery.lower()).strip("-")[:40] or "gallery"
    digest = hashlib.sha256(gallery.encode()).hexdigest()[:10]
    return f"{stem}-{digest}"


def gallery_name(body: Body) -> str:
    return str(body.get("spec", {}).get("galleryName") or body["metadata"]["name"])


def shards_wanted(spec: Body, face_count: int) -> int:
    """spec.shards, or more when the faces exceed shards x capacityPerShard."""
    shards = int(spec.get("shards", 1))
    capacity = int(spec.get("capacityPerShard", 10_000_000))
    return max(shards, math.ceil(face_count / capacity))


def shard_refs(
    count: int,
    statefulset: str,
    service: str,
    port: int,
    *,
    address: str = "{pod}.{service}:{port}",
    namespace: str = "",
    stride: int = 0,
    followers: int = 0,
) -> tuple[ShardRef, ...]:
    """The first `count` pods of the indexer StatefulSet, with their followers: pod i of the
    follower StatefulSets `<statefulset>-r1` .. `-r<followers>` (each under its own headless
    Service of the same name). By default at their stable DNS names; `address` is a format
    with pod, service, namespace and port (port + i x stride)."""

    def at(pod_set: str, pod_service: str, i: int) -> str:
        return address.format(
            pod=f"{pod_set}-{i}", service=pod_service, namespace=namespace, port=port + i * stride
        )

    ranks = [f"{statefulset}-r{rank}" for rank in range(1, followers + 1)]
    return tuple(
        ShardRef(
            f"{statefulset}-{i}",
            at(statefulset, service, i),
            tuple(at(follower, follower, i) for follower in ranks),
        )
        for i in range(count)
    )


def _shard_blocks(owners: Sequence[str], refs: Mapping[str, ShardRef]) -> list[dict[str, Any]]:
    slots: dict[str, list[int]] = {}
    for slot, name in enumerate(owners):
        slots.setdefault(name, []).append(slot)
    return [
        {
            "name": name,
            "slots": slot_ranges(held),
            "primary": refs[name].address,
            "replicas": list(refs[name].replicas),
        }
        for name, held in sorted(slots.items(), key=lambda item: _ordinal(item[0]))
    ]


def _ordinal(name: str) -> tuple[int, str]:
    stem, _, number = name.rpartition("-")
    return (int(number), stem) if number.isdigit() else (1 << 30, name)


def placement_status(
    version: int, owners: Sequence[str], refs: Sequence[ShardRef]
) -> dict[str, Any]:
    """status.placement: each shard with its slots as ranges ("0-511") and its address."""
    by_name = {r.name: r for r in refs}
    return {"version": version, "shards": _shard_blocks(owners, by_name)}


def owners_of(blocks: Sequence[Body]) -> list[str | None]:
    """Each slot's shard name from status shard blocks; None for a slot no block names."""
    owners: list[str | None] = [None] * SLOT_COUNT
    for block in blocks:
        for slot in parse_slot_ranges(str(block.get("slots", ""))):
            if 0 <= slot < SLOT_COUNT:
                owners[slot] = str(block["name"])
    return owners


def placement_of(body: Body) -> Placement | None:
    """The placement a FaceGallery's status records, with its reshard target if one runs."""
    status = body.get("status") or {}
    current = (status.get("placement") or {}).get("shards")
    if not current:
        return None
    resharding = status.get("resharding") or {}
    # Until the cut-over, writes go to both the current and the target shard of a moving slot.
    target = resharding.get("target") or [] if resharding.get("stage") in DUAL_WRITE_STAGES else []
    refs: dict[str, ShardRef] = {}
    for block in [*current, *target]:
        refs[block["name"]] = ShardRef(
            block["name"], block.get("primary", ""), tuple(block.get("replicas", ()))
        )
    names = sorted(refs, key=_ordinal)
    index = {name: i for i, name in enumerate(names)}
    owners = owners_of(current)
    if any(o is None for o in owners):
        return None
    goal = owners_of(target) if target else []
    return Placement(
        gallery=gallery_name(body),
        version=int(status["placement"].get("version", 1)),
        shards=tuple(refs[n] for n in names),
        slot_shards=tuple(index[o] for o in owners if o is not None),
        target=tuple(index[o] for o in goal if o is not None) if target else (),
    )


def gallery_record(body: Body) -> GalleryRecord | None:
    placement = placement_of(body)
    if placement is None:
        return None
    return GalleryRecord(
        gallery_name(body), parse_time(body["metadata"].get("creationTimestamp")), placement
    )


def condition(
    kind: str, ok: bool | None, reason: str, message: str = "", generation: int | None = None
) -> dict[str, Any]:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    block: dict[str, Any] = {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now(),
    }
    if generation is not None:
        block["observedGeneration"] = generation
    return block


def merge_conditions(old: Sequence[Body], new: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Replace conditions by type, keeping lastTransitionTime when the status did not change."""
    merged = {c["type"]: dict(c) for c in old}
    for c in new:
        before = merged.get(c["type"])
        block = dict(c)
        if before is not None and before.get("status") == c["status"]:
            block["lastTransitionTime"] = before.get("lastTransitionTime", c["lastTransitionTime"])
        merged[c["type"]] = block
    return list(merged.values())


# -- cameras ----------------------------------------------------------------------------------


def region_text(region: Region | None) -> str | None:
    if region is None:
        return None
    return f"{region.width}x{region.height}+{region.x}+{region.y}"


def parse_region(text: str | None) -> Region | None:
    if not text:
        return None
    match = _REGION.fullmatch(text)
    if match is None:
        raise InvalidRequest(f"a region is WxH+X+Y, got {text!r}")
    return Region(*(int(g) for g in match.groups()))


def pool_of(body: Body) -> str:
    return str(body.get("spec", {}).get("detector") or DEFAULT_POOL)


def check_pool(detector: str) -> str:
    """Detector pools name Deployments: they must be DNS labels."""
    if not _DNS_LABEL.fullmatch(detector):
        raise InvalidRequest(
            f"detector {detector!r} must be a DNS label (a-z, 0-9 and -, at most 63) in Kubernetes"
        )
    return detector


def worker_options(spec_options: Mapping[str, Any] | None) -> dict[str, str]:
    """A Camera's `options` (camelCase, typed) as the worker's option names and ini values."""
    result: dict[str, str] = {}
    for key, value in (spec_options or {}).items():
        name = re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, Mapping):
            text = ",".join(f"{k}={v}" for k, v in value.items())
        else:
            text = str(value)
        result[name] = text
    return result


def camera_record(body: Body) -> CameraRecord:
    spec = body.get("spec", {})
    status = body.get("status") or {}
    return CameraRecord(
        id=body["metadata"]["name"],
        url=str(spec.get("url", "")),
        detector=pool_of(body),
        meta=str(spec.get("meta", "")),
        active=bool(spec.get("enabled", True)),
        created_at=parse_time(body["metadata"].get("creationTimestamp")),
        rot=parse_region(spec.get("rot")),
        roi=parse_region(spec.get("roi")),
        worker=str(status.get("workerPod") or ""),
        options=tuple(sorted(worker_options(spec.get("options")).items())),
        status=camera_status(status),
    )


def camera_status(status: Body) -> CameraStatus | None:
    """A Camera resource's status as the ControlPlane contract gives it."""
    phase = status.get("phase")
    if not phase:
        return None
    reason = ""
    for c in status.get("conditions") or []:
        if c.get("status") == "False" and c.get("message"):
            reason = str(c["message"])
    last = status.get("lastPostTime")
    return CameraStatus(
        phase=str(phase),
        worker=str(status.get("workerPod") or ""),
        frames_per_second=float(status.get("framesPerSecond") or 0.0),
        posts=int(status.get("posts") or 0),
        last_post=parse_time(last) if last else None,
        reason=reason,
    )


def streams(body: Body) -> bool:
    """Whether a camera needs a worker: enabled, with a stream, and not being deleted."""
    spec = body.get("spec", {})
    deleting = bool(body["metadata"].get("deletionTimestamp"))
    return bool(spec.get("enabled", True)) and bool(spec.get("url")) and not deleting


def camera_state_status(state: CameraState) -> dict[str, Any]:
    """The Camera status fields a worker's report sets."""
    status: dict[str, Any] = {
        "phase": "Streaming" if state.streaming else "Reconnecting",
        "framesPerSecond": round(state.frames_per_second, 1),
        "posts": state.posts,
        "conditions": [
            condition(
                "Streaming",
                state.streaming,
                "FramesArrive" if state.streaming else "Reconnecting",
            ),
            condition("Licensed", True, "Leased"),
        ],
    }
    if state.last_post is not None:
        status["lastPostTime"] = state.last_post.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return status


def camera_refusal_status(refusal: CameraRefusal) -> dict[str, Any]:
    """The Camera status of a camera its worker refused to process."""
    conditions = [condition("Streaming", False, "Refused", refusal.reason)]
    if refusal.licence:
        conditions.append(condition("Licensed", False, "LicenceLimit", refusal.reason))
    return {"phase": "Refused", "framesPerSecond": 0.0, "conditions": conditions}


# -- worker Deployments -----------------------------------------------------------------------


def detectors_max(template: Body, pool: str) -> int:
    overrides = (template.get("pools") or {}).get(pool) or {}
    return int(overrides.get("detectorsMax") or template.get("detectorsMax") or 4)


def deployment_name(template: Body, pool: str) -> str:
    return f"{template.get('namePrefix') or 'facegrid-video'}-{pool}"


def worker_deployment(template: Body, pool: str, replicas: int, namespace: str) -> dict[str, Any]:
    """The pool's video worker Deployment, from the chart's template for one pool."""
    deployment = copy.deepcopy(dict(template["deployment"]))
    meta = deployment.setdefault("metadata", {})
    meta["name"] = deployment_name(template, pool)
    meta["namespace"] = namespace
    meta.setdefault("labels", {}).update({POOL_LABEL: pool, **MANAGED_BY})
    spec = deployment.setdefault("spec", {})
    spec["replicas"] = replicas
    spec.setdefault("selector", {}).setdefault("matchLabels", {})[POOL_LABEL] = pool
    pod = spec.setdefault("template", {})
    pod.setdefault("metadata", {}).setdefault("labels", {})[POOL_LABEL] = pool
    containers = pod.setdefault("spec", {}).setdefault("containers", [])
    worker = next((c for c in containers if c.get("name") == "video"), None)
    if worker is None:
        raise ValueError("the video worker template has no container named `video`")
    env = [
        e
        for e in worker.get("env", [])
        if e.get("name") not in ("FACEGRID_VIDEO_DETECTOR_NAME", "FACEGRID_VIDEO_DETECTORS_MAX")
    ]
    env += [
        {"name": "FACEGRID_VIDEO_DETECTOR_NAME", "value": pool},
        {"name": "FACEGRID_VIDEO_DETECTORS_MAX", "value": str(detectors_max(template, pool))},
    ]
    worker["env"] = env
    return deployment


def live_workers(pods: Sequence[Body], pool: str) -> list[str]:
    """The pool's pods that can take cameras: running and not being deleted, in name order."""
    return sorted(
        p["metadata"]["name"]
        for p in pods
        if (p["metadata"].get("labels") or {}).get(POOL_LABEL) == pool
        and not p["metadata"].get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") == "Running"
    )
