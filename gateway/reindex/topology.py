"""Where a gallery's faces belong, and the shard calls that put them there.

Placements come from the control plane (ListGalleries / GetPlacement) and are read as the
gateway reads them (`Route`). Routing a batch is vectorised: `slot_of` over a numpy array, then
the placement's slot table, so a check of a million ids routes them in milliseconds.

Writes go to primaries, as the gateway's do; followers replay them from the primary's log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
import numpy as np

from facegrid.gateway.shards import ChannelPool, Route, ShardCopies
from facegrid.slots import SLOT_COUNT
from facegrid.v1 import controlplane_pb2 as cp
from facegrid.v1 import controlplane_pb2_grpc, index_pb2_grpc
from facegrid.v1 import index_pb2 as pb

log = logging.getLogger(__name__)

T = TypeVar("T")

_MIX = np.uint64(0x9E3779B97F4A7C15)
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class TopologyError(Exception):
    """The control plane or a shard failed; `retry` says whether running again may help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def _error(what: str, e: grpc.aio.AioRpcError) -> TopologyError:
    return TopologyError(
        f"{what}: {e.code().name} {e.details() or ''}".rstrip(), retry=e.code() in _TRANSIENT
    )


def slots_of(ids: np.ndarray) -> np.ndarray:
    """`facegrid.slots.slot_of` for every id at once (uint64 arithmetic wraps like the mask)."""
    mixed = ids.astype(np.uint64, copy=False) * _MIX
    return ((mixed >> np.uint64(32)) % np.uint64(SLOT_COUNT)).astype(np.int64)


@dataclass(frozen=True)
class Routed:
    """For each id of a batch: the index (into route.shards) of the shard that owns it, and of
    the shard it is moving to mid-reshard (equal to the owner otherwise)."""

    owner: np.ndarray
    target: np.ndarray


def route_ids(route: Route, ids: np.ndarray) -> Routed:
    slots = slots_of(ids)
    owners = np.asarray(route.slot_shards, np.int64)
    owner = owners[slots % len(owners)]
    if not route.target_shards:
        return Routed(owner, owner)
    targets = np.asarray(route.target_shards, np.int64)
    return Routed(owner, targets[slots % len(targets)])


class ControlPlane:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
        self._timeout = timeout

    async def routes(self, gallery: str | None = None) -> list[Route]:
        """Every gallery's placement, by name; or the one gallery's (TopologyError if unknown)."""
        try:
            if gallery is not None:
                placement = await self._stub.GetPlacement(
                    cp.GetPlacementRequest(gallery=gallery), timeout=self._timeout
                )
                return [Route.from_wire(placement)]
            listed = await self._stub.ListGalleries(
                cp.ListGalleriesRequest(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise TopologyError(f"gallery {gallery!r} does not exist", retry=False) from e
            raise _error("control plane", e) from e
        routes = [Route.from_wire(g.placement) for g in listed.galleries]
        return sorted(routes, key=lambda r: r.gallery)

    async def create_gallery(self, name: str) -> None:
        """Create the gallery (there already is fine)."""
        try:
            await self._stub.CreateGallery(
                cp.CreateGalleryRequest(name=name), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise _error("control plane", e) from e

    async def delete_gallery(self, name: str) -> None:
        """Delete the gallery and its vectors (gone already is fine)."""
        try:
            await self._stub.DeleteGallery(
                cp.DeleteGalleryRequest(name=name), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise _error("control plane", e) from e


class Shards:
    """The calls reindexing makes on shard primaries, with a few retries for transient faults."""

    def __init__(self, channels: ChannelPool, timeout: float, *, attempts: int = 4) -> None:
        self._channels = channels
        self._timeout = timeout
        self._attempts = attempts

    async def _call(
        self,
        shard: ShardCopies,
        what: str,
        method: Callable[[index_pb2_grpc.IndexShardAsyncStub], Callable[..., Awaitable[T]]],
        request: object,
    ) -> T:
        """method(stub)(request), retried with backoff while the shard is unavailable."""
        delay = 0.5
        for attempt in range(self._attempts):
            try:
                stub = self._channels.stub(shard.primary)
                return await method(stub)(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as e:
                if e.code() not in _TRANSIENT or attempt == self._attempts - 1:
                    raise
                log.warning("shard %s %s: %s; retrying", shard.name, what, e.code().name)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def upsert(
        self, shard: ShardCopies, gallery: str, ids: Sequence[int], vectors: Sequence[bytes]
    ) -> list[tuple[int, str]]:
        """Add or overwrite the vectors; returns the (id, reason) of those the shard refused.

        A batch is atomic on the shard: refused for one bad vector (another size than the
        gallery's), it is halved until only the culprits are left out.
        """
        if not ids:
            return []
        entries = [pb.IndexEntry(id=int(i), vector=v) for i, v in zip(ids, vectors, strict=True)]
        try:
            await self._call(
                shard,
                "Add",
                lambda stub: stub.Add,
                pb.AddRequest(gallery=gallery, entries=entries, upsert=True),
            )
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise _error(f"shard {shard.name} Add", e) from e
            if len(ids) == 1:
                return [(int(ids[0]), e.details() or "refused by the shard")]
            half = len(ids) // 2
            return [
                *await self.upsert(shard, gallery, ids[:half], vectors[:half]),
                *await self.upsert(shard, gallery, ids[half:], vectors[half:]),
            ]
        return []

    async def delete(self, shard: ShardCopies, gallery: str, ids: Sequence[int]) -> int:
        deleted = 0
        for start in range(0, len(ids), 5000):
            chunk = [int(i) for i in ids[start : start + 5000]]
            try:
                response = await self._call(
                    shard,
                    "Delete",
                    lambda stub: stub.Delete,
                    pb.DeleteRequest(gallery=gallery, ids=chunk),
                )
            except grpc.aio.AioRpcError as e:
                raise _error(f"shard {shard.name} Delete", e) from e
            deleted += response.deleted
        return deleted

    async def drop_gallery(self, shard: ShardCopies, gallery: str) -> int:
        try:
            response = await self._call(
                shard,
                "DropGallery",
                lambda stub: stub.DropGallery,
                pb.DropGalleryRequest(gallery=gallery),
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return 0
            raise _error(f"shard {shard.name} DropGallery", e) from e
        return int(response.deleted)

    async def list_ids(self, shard: ShardCopies, gallery: str, *, page: int = 50_000) -> np.ndarray:
        """Every id the shard holds in the gallery, ascending (empty if it has no such gallery)."""
        chunks, after = [], 0
        while True:
            try:
                response = await self._call(
                    shard,
                    "List",
                    lambda stub: stub.List,
                    pb.ListRequest(gallery=gallery, after_id=after, limit=page),
                )
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    break
                raise _error(f"shard {shard.name} List", e) from e
            ids = np.array(response.ids, np.uint64)
            if len(ids):
                chunks.append(ids)
                after = int(ids[-1])
            if not response.more or not len(ids):
                break
        return np.concatenate(chunks) if chunks else np.empty(0, np.uint64)

    async def vectors(
        self, shard: ShardCopies, gallery: str, ids: Sequence[int]
    ) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for start in range(0, len(ids), 1000):
            chunk = [int(i) for i in ids[start : start + 1000]]
            try:
                response = await self._call(
                    shard, "Get", lambda stub: stub.Get, pb.GetRequest(gallery=gallery, ids=chunk)
                )
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    return out
                raise _error(f"shard {shard.name} Get", e) from e
            out.update((int(e.id), bytes(e.vector)) for e in response.entries)
        return out

    async def galleries(self, shard: ShardCopies) -> dict[str, int]:
        """The galleries the shard holds, with their vector counts."""
        try:
            stats = await self._call(shard, "Stats", lambda stub: stub.Stats, pb.StatsRequest())
        except grpc.aio.AioRpcError as e:
            raise _error(f"shard {shard.name} Stats", e) from e
        return {g.name: int(g.count) for g in stats.galleries}
