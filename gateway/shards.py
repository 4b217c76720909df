"""The sharding client: face vectors to the shards their galleries' placements name.

A face id falls into slot `slot_of(id)` (facegrid.slots); each gallery's placement maps slots to
shards. An add goes to the slot's owner in every gallery of the face, all or nothing: if one
gallery's shard refuses, the galleries already written are undone. A search asks every shard of
the gallery at once, under one deadline, and merges their nearest hits. Reads rotate over a
shard's primary and its followers and fall over to the next when one does not answer; a shard
none of whose copies answers in time is counted out, and the result says how many shards were
live of how many (the seed's X-Live-Servers), or fails when the caller is strict.

Placements come from the control plane: fetched on first use, then kept current by its
WatchPlacements stream.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import grpc

from facegrid.gateway.coalesce import Coalescer
from facegrid.gateway.core.errors import (
    AlreadyExists,
    ApiError,
    BadParam,
    NotFound,
    ServiceUnavailable,
)
from facegrid.gateway.core.ports import SearchOutcome
from facegrid.gateway.timing import timed
from facegrid.slots import slot_of
from facegrid.v1 import controlplane_pb2 as cp
from facegrid.v1 import controlplane_pb2_grpc, index_pb2_grpc
from facegrid.v1 import index_pb2 as pb

log = logging.getLogger(__name__)

T = TypeVar("T")

# Codes after which another copy of the shard may well answer.
_RETRY_ELSEWHERE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.FAILED_PRECONDITION,  # a follower asked to write, or mid-promotion
    grpc.StatusCode.CANCELLED,
}


@dataclass(frozen=True)
class ShardCopies:
    name: str
    primary: str
    replicas: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    """A gallery's placement: which shard owns each slot, and while the gallery is resharded,
    which shard each slot is moving to (`target_shards`, empty otherwise)."""

    gallery: str
    version: int
    shards: tuple[ShardCopies, ...]
    slot_shards: tuple[int, ...]
    target_shards: tuple[int, ...] = ()

    def owner(self, face_id: int) -> ShardCopies:
        """The shard that answers reads of the face: its slot's current owner."""
        return self.shards[self.slot_shards[slot_of(face_id) % len(self.slot_shards)]]

    def writers(self, face_id: int) -> list[ShardCopies]:
        """The shards a write of the face goes to: the owner and, mid-reshard, the target."""
        owner = self.owner(face_id)
        if not self.target_shards:
            return [owner]
        target = self.shards[self.target_shards[slot_of(face_id) % len(self.target_shards)]]
        return [owner] if target == owner else [owner, target]

    @classmethod
    def from_wire(cls, placement: cp.Placement) -> Route:
        shards = tuple(ShardCopies(s.name, s.address, tuple(s.replicas)) for s in placement.shards)
        return cls(
            placement.gallery,
            placement.version,
            shards,
            tuple(placement.slot_shards),
            tuple(placement.target_slot_shards),
        )


class Placements(Protocol):
    async def route(self, gallery: str) -> Route: ...


class StaticPlacements:
    """Fixed routes, for a deployment without a control plane and for tests."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = {r.gallery: r for r in routes}

    async def route(self, gallery: str) -> Route:
        try:
            return self._routes[gallery]
        except KeyError:
            raise NotFound(f"gallery {gallery!r} does not exist") from None


class ControlPlanePlacements:
    """Routes from the control plane: GetPlacement on a miss, WatchPlacements to stay current."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
        self._timeout = timeout
        self._routes: dict[str, Route] = {}

    async def route(self, gallery: str) -> Route:
        cached = self._routes.get(gallery)
        if cached is not None:
            return cached
        try:
            placement = await self._stub.GetPlacement(
                cp.GetPlacementRequest(gallery=gallery), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"gallery {gallery!r} does not exist") from e
            raise ServiceUnavailable(f"control plane: {e.code().name} {e.details()}") from e
        return self._remember(Route.from_wire(placement))

    def _remember(self, route: Route) -> Route:
        current = self._routes.get(route.gallery)
        if current is None or current.version <= route.version:
            self._routes[route.gallery] = route
        return self._routes[route.gallery]

    async def watch(self, retry_seconds: float = 1.0) -> None:
        """Apply placement changes as they happen, until cancelled."""
        while True:
            try:
                async for event in self._stub.WatchPlacements(cp.WatchPlacementsRequest()):
                    if event.kind == cp.PlacementEvent.DELETED:
                        self._routes.pop(event.placement.gallery, None)
                    else:
                        self._remember(Route.from_wire(event.placement))
            except grpc.aio.AioRpcError as e:
                log.warning("placement watch: %s; retrying", e.code().name)
                # Changes missed while disconnected: start from what GetPlacement says.
                self._routes.clear()
            await asyncio.sleep(retry_seconds)


class ChannelPool:
    """One gRPC channel per shard address, opened on first use."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, address: str) -> index_pb2_grpc.IndexShardAsyncStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        return index_pb2_grpc.IndexShardStub(channel)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


class AddCoalescer:
    """Sends concurrent adds bound for the same shard and gallery as one AddRequest.

    Each (shard, gallery) has a Coalescer: many callers share a request (and its fsync), which
    is what lets a shard take thousands of faces per second through gRPC. A batch is atomic on
    the shard, so when it is refused for one face's sake (a duplicate id, a bad vector), it is
    split in halves and retried until only the culprits fail.
    """

    def __init__(self, channels: ChannelPool, timeout: float, max_batch: int = 512) -> None:
        self._channels = channels
        self._timeout = timeout
        self._max_batch = max_batch
        self._adds: dict[tuple[str, str], Coalescer[pb.IndexEntry, None]] = {}

    async def add(self, address: str, gallery: str, entry: pb.IndexEntry) -> None:
        adds = self._adds.get((address, gallery))
        if adds is None:
            send = functools.partial(self._send, address, gallery)
            adds = self._adds[address, gallery] = Coalescer(send, self._max_batch)
        await adds(entry)

    async def _send(
        self, address: str, gallery: str, entries: list[pb.IndexEntry]
    ) -> list[BaseException | None]:
        stub = self._channels.stub(address)
        try:
            await stub.Add(pb.AddRequest(gallery=gallery, entries=entries), timeout=self._timeout)
        except grpc.aio.AioRpcError as e:
            blame_one = e.code() in (
                grpc.StatusCode.ALREADY_EXISTS,
                grpc.StatusCode.INVALID_ARGUMENT,
            )
            if not blame_one or len(entries) == 1:
                return [e] * len(entries)
            half = len(entries) // 2  # bisect: a few culprits cost a few requests each
            return [
                *await self._send(address, gallery, entries[:half]),
                *await self._send(address, gallery, entries[half:]),
            ]
        return [None] * len(entries)


def _shard_error(shard: str, error: grpc.aio.AioRpcError) -> ApiError:
    code, details = error.code(), error.details() or error.code().name
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return BadParam(details, param="facen")
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExists(details)
    return ServiceUnavailable(f"index shard {shard}: {code.name} {details}")


class ShardRouter:
    def __init__(
        self,
        placements: Placements,
        channels: ChannelPool,
        *,
        timeout: float = 5.0,
        dim: int | None = None,
    ) -> None:
        """dim: the model's vector size; when given, vectors of another size are refused here
        (a gallery spans shards, and a shard only knows the size of what it already holds)."""
        self._placements = placements
        self._channels = channels
        self._timeout = timeout
        self._dim = dim
        self._turns: dict[str, itertools.count[int]] = {}
        self._adds = AddCoalescer(channels, timeout)

    def _check(self, vector: bytes) -> None:
        if self._dim is not None and len(vector) != 4 * self._dim:
            raise BadParam(
                f"facen has {len(vector) // 4} values, the model makes {self._dim}",
                param="facen",
                value=len(vector) // 4,
            )

    # -- writes go to primaries -----------------------------------------------------------------

    async def add(self, face_id: int, vector: bytes, galleries: Sequence[str]) -> None:
        """Store the vector under face_id in every gallery, or in none."""
        self._check(vector)
        routes = [await self._placements.route(g) for g in galleries]
        entry = pb.IndexEntry(id=face_id, vector=vector)

        async def add_to(route: Route) -> None:
            writers = route.writers(face_id)
            outcomes = await asyncio.gather(
                *(self._adds.add(shard.primary, route.gallery, entry) for shard in writers),
                return_exceptions=True,
            )
            errors = [o for o in outcomes if o is not None]
            if errors and len(errors) < len(writers):
                # Mid-reshard, one of the two copies took it: take it back from that one.
                await asyncio.gather(
                    *(
                        self._delete_on(route.gallery, shard, [face_id], best_effort=True)
                        for shard, o in zip(writers, outcomes, strict=True)
                        if o is None
                    )
                )
            if errors:
                raise errors[0]

        async with timed("index"):
            outcomes = await asyncio.gather(*(add_to(r) for r in routes), return_exceptions=True)
        failed = [(r, o) for r, o in zip(routes, outcomes, strict=True) if o is not None]
        if not failed:
            return
        done = [r for r, o in zip(routes, outcomes, strict=True) if o is None]
        if done:
            await self._delete_in([face_id], done, best_effort=True)
        route, error = failed[0]
        if isinstance(error, grpc.aio.AioRpcError):
            raise _shard_error(route.owner(face_id).name, error) from error
        raise error

    async def delete(self, face_id: int, galleries: Sequence[str]) -> None:
        await self.delete_many([face_id], galleries)

    async def delete_many(self, face_ids: Sequence[int], galleries: Sequence[str]) -> None:
        """Faces out of the galleries' indexes: one request per gallery and shard."""
        routes = [await self._placements.route(g) for g in galleries]
        await self._delete_in(face_ids, routes, best_effort=False)

    async def _delete_in(
        self, face_ids: Sequence[int], routes: list[Route], *, best_effort: bool
    ) -> None:
        calls = []
        for route in routes:
            by_shard: dict[ShardCopies, list[int]] = {}
            for face_id in face_ids:
                for shard in route.writers(face_id):
                    by_shard.setdefault(shard, []).append(face_id)
            calls += [
                self._delete_on(route.gallery, shard, ids, best_effort=best_effort)
                for shard, ids in by_shard.items()
            ]
        await asyncio.gather(*calls)

    async def _delete_on(
        self, gallery: str, shard: ShardCopies, face_ids: list[int], *, best_effort: bool
    ) -> None:
        """best_effort: undoing a write; a failure is logged, not raised."""
        try:
            await self._channels.stub(shard.primary).Delete(
                pb.DeleteRequest(gallery=gallery, ids=face_ids), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            if not best_effort:
                raise _shard_error(shard.name, e) from e
            log.error("could not undo faces %s in %s on %s: %s", face_ids, gallery, shard.name, e)

    # -- reads rotate over copies ---------------------------------------------------------------

    async def search(
        self,
        gallery: str,
        vector: bytes,
        n: int,
        max_distance: float = 0.0,
        *,
        strict: bool = False,
        linear: bool = False,
    ) -> SearchOutcome:
        self._check(vector)
        route = await self._placements.route(gallery)
        request = pb.SearchRequest(
            gallery=gallery,
            vector=vector,
            top_n=n,
            max_distance=max_distance,
            linear_search=linear,
        )
        deadline = time.monotonic() + self._timeout

        async def ask(shard: ShardCopies) -> pb.SearchResponse:
            return await self._read(
                shard, deadline, lambda stub, timeout: stub.Search(request, timeout=timeout)
            )

        shards = list(route.shards)
        async with timed("search"):
            answers = await asyncio.gather(*(ask(s) for s in shards), return_exceptions=True)
        live = [a for a in answers if isinstance(a, pb.SearchResponse)]
        for shard, answer in zip(shards, answers, strict=True):
            if isinstance(answer, grpc.aio.AioRpcError) and answer.code() not in _RETRY_ELSEWHERE:
                raise _shard_error(shard.name, answer) from answer
            if isinstance(answer, BaseException) and not isinstance(answer, grpc.aio.AioRpcError):
                raise answer
        if not live or (strict and len(live) < len(shards)):
            raise ServiceUnavailable(
                f"{len(shards) - len(live)} of {len(shards)} index shards of gallery "
                f"{gallery!r} did not answer"
            )
        best: dict[int, float] = {}
        for answer in live:
            for hit in answer.hits:
                if hit.id not in best or hit.distance < best[hit.id]:
                    best[hit.id] = hit.distance
        hits = heapq.nsmallest(n, best.items(), key=lambda item: item[1])
        return SearchOutcome(
            hits=hits,
            live=len(live),
            total=len(shards),
            used_index=any(a.used_index for a in live),
        )

    async def get(self, gallery: str, face_id: int) -> bytes | None:
        route = await self._placements.route(gallery)
        deadline = time.monotonic() + self._timeout
        request = pb.GetRequest(gallery=gallery, ids=[face_id])
        shard = route.owner(face_id)
        try:
            response = await self._read(
                shard, deadline, lambda stub, timeout: stub.Get(request, timeout=timeout)
            )
        except grpc.aio.AioRpcError as e:
            raise _shard_error(shard.name, e) from e
        return response.entries[0].vector if response.entries else None

    async def _read(
        self,
        shard: ShardCopies,
        deadline: float,
        call: Callable[[index_pb2_grpc.IndexShardAsyncStub, float], Awaitable[T]],
    ) -> T:
        """Ask the shard's copies in turn, starting with the next in rotation."""
        copies = (shard.primary, *shard.replicas)
        turn = next(self._turns.setdefault(shard.name, itertools.count()))
        order = [copies[(turn + k) % len(copies)] for k in range(len(copies))]
        last: grpc.aio.AioRpcError | None = None
        for address in order:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                return await call(self._channels.stub(address), remaining)
            except grpc.aio.AioRpcError as e:
                if e.code() not in _RETRY_ELSEWHERE:
                    raise
                last = e
        if last is not None:
            raise last
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details=f"no copy of shard {shard.name} answered in time",
        )
