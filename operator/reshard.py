"""Moving a gallery's slots between index shards, over the shards' gRPC contract.

A reshard runs in stages, each safe to repeat after a crash:

1. DualWrite: the placement carries a target; writers (the gateways) send every add and delete
   to a moving slot's current and target shard. Nothing is copied yet.
2. Copy: the faces already in moving slots are copied from their current shard to the target
   (upserts, so a face the gateway has just written there is simply overwritten).
3. Verify: the moving slots are compared shard by shard: faces the target holds and the source
   does not (deleted while they were being copied) are deleted there, faces it lacks are copied.
   Every copy is checked against the source once it has landed, so a face deleted mid-copy is
   not left behind on the target.
4. CutOver: the target becomes the placement; reads go to the new owners.
5. Cleanup: the moved faces are deleted from their old shards.

The source stays authoritative until the cut-over, and both shards receive every write from the
dual-write stage on, so no acknowledged face is lost and none is left behind twice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable

import grpc

from facegrid.operator.core.placement import Placement, ShardRef, Unavailable, slot_of
from facegrid.v1 import index_pb2 as pb
from facegrid.v1 import index_pb2_grpc

log = logging.getLogger(__name__)

PAGE = 2000
BATCH = 500
CALL_TIMEOUT = 30.0

Progress = Callable[[int, int], Awaitable[None]]
"""Called with (slots done, slots moving) as the copy goes."""


def moves(placement: Placement) -> dict[tuple[int, int], set[int]]:
    """(source shard, target shard) -> the slots moving between them."""
    pairs: dict[tuple[int, int], set[int]] = defaultdict(set)
    for slot, (now, then) in enumerate(zip(placement.slot_shards, placement.target, strict=True)):
        if now != then:
            pairs[(now, then)].add(slot)
    return dict(pairs)


class SlotMover:
    """Copies, reconciles and cleans up the faces of moving slots; stubs are per address."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, shard: ShardRef) -> index_pb2_grpc.IndexShardAsyncStub:
        channel = self._channels.get(shard.address)
        if channel is None:
            channel = self._channels[shard.address] = grpc.aio.insecure_channel(shard.address)
        return index_pb2_grpc.IndexShardStub(channel)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def _guard(self, shard: ShardRef, call: Awaitable[object]) -> object:
        try:
            return await call
        except grpc.aio.AioRpcError as e:
            raise Unavailable(f"shard {shard.name} ({shard.address}): {e.code().name}") from e

    async def ids_in(self, shard: ShardRef, gallery: str, slots: set[int]) -> set[int]:
        """The shard's face ids in `slots`; none when the shard has never held the gallery."""
        found: set[int] = set()
        after = 0
        while True:
            try:
                page = await self._stub(shard).List(
                    pb.ListRequest(gallery=gallery, after_id=after, limit=PAGE),
                    timeout=CALL_TIMEOUT,
                )
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    return found
                raise Unavailable(f"shard {shard.name}: {e.code().name}") from e
            found.update(i for i in page.ids if slot_of(i) in slots)
            if not page.more or not page.ids:
                return found
            after = page.ids[-1]

    async def copy(
        self, source: ShardRef, target: ShardRef, gallery: str, ids: Iterable[int]
    ) -> int:
        copied = 0
        ordered = sorted(ids)
        for start in range(0, len(ordered), BATCH):
            batch = ordered[start : start + BATCH]
            got = await self._guard(
                source,
                self._stub(source).Get(
                    pb.GetRequest(gallery=gallery, ids=batch), timeout=CALL_TIMEOUT
                ),
            )
            assert isinstance(got, pb.GetResponse)
            if not got.entries:
                continue  # deleted meanwhile; Verify settles it
            await self._guard(
                target,
                self._stub(target).Add(
                    pb.AddRequest(gallery=gallery, entries=got.entries, upsert=True),
                    timeout=CALL_TIMEOUT,
                ),
            )
            # A face deleted while it was being copied: its delete may have reached the target
            # before the copy did. The source says whether it still lives.
            sent = [e.id for e in got.entries]
            still = await self._guard(
                source,
                self._stub(source).Get(
                    pb.GetRequest(gallery=gallery, ids=sent), timeout=CALL_TIMEOUT
                ),
            )
            assert isinstance(still, pb.GetResponse)
            gone = set(sent) - {e.id for e in still.entries}
            if gone:
                await self.delete(target, gallery, gone)
            copied += len(sent) - len(gone)
        return copied

    async def delete(self, shard: ShardRef, gallery: str, ids: Iterable[int]) -> int:
        ordered = sorted(ids)
        deleted = 0
        for start in range(0, len(ordered), BATCH):
            answer = await self._guard(
                shard,
                self._stub(shard).Delete(
                    pb.DeleteRequest(gallery=gallery, ids=ordered[start : start + BATCH]),
                    timeout=CALL_TIMEOUT,
                ),
            )
            assert isinstance(answer, pb.DeleteResponse)
            deleted += answer.deleted
        return deleted

    # -- the stages -----------------------------------------------------------------------------

    async def copy_moving(self, placement: Placement, progress: Progress) -> int:
        """Stage Copy: every face of every moving slot, to its target. Returns faces copied."""
        pairs = moves(placement)
        total = sum(len(slots) for slots in pairs.values())
        done = copied = 0
        await progress(done, total)
        for (src, dst), slots in sorted(pairs.items()):
            source, target = placement.shards[src], placement.shards[dst]
            ids = await self.ids_in(source, placement.gallery, slots)
            copied += await self.copy(source, target, placement.gallery, ids)
            done += len(slots)
            await progress(done, total)
        log.info("gallery %s: copied %d faces in %d slots", placement.gallery, copied, total)
        return copied

    async def verify(self, placement: Placement) -> tuple[int, int]:
        """Stage Verify: make each target hold exactly its source's faces of the moving slots.

        Returns (faces removed from targets, faces copied to them)."""
        removed = added = 0
        for (src, dst), slots in sorted(moves(placement).items()):
            source, target = placement.shards[src], placement.shards[dst]
            # The target first: a face added between the two listings is then only missing
            # from the target's list, and copying it again is harmless; listed the other way
            # round it would look deleted, and be removed from the target.
            copies = await self.ids_in(target, placement.gallery, slots)
            have = await self.ids_in(source, placement.gallery, slots)
            removed += await self.delete(target, placement.gallery, copies - have)
            added += await self.copy(source, target, placement.gallery, have - copies)
        return removed, added

    async def clean_up(self, placement: Placement) -> int:
        """Stage Cleanup: delete the moved slots' faces from the shards they left."""
        deleted = 0
        for (src, _), slots in sorted(moves(placement).items()):
            source = placement.shards[src]
            deleted += await self.delete(
                source, placement.gallery, await self.ids_in(source, placement.gallery, slots)
            )
        return deleted

    async def drop(self, shard: ShardRef, gallery: str) -> None:
        await self._guard(
            shard,
            self._stub(shard).DropGallery(
                pb.DropGalleryRequest(gallery=gallery), timeout=CALL_TIMEOUT
            ),
        )

    async def configure(self, shard: ShardRef, gallery: str, m: int, efc: int, efs: int) -> None:
        """The gallery's own HNSW parameters on the shard (a no-op when it has them)."""
        await self._guard(
            shard,
            self._stub(shard).ConfigureGallery(
                pb.ConfigureGalleryRequest(
                    gallery=gallery, m=m, ef_construction=efc, ef_search=efs
                ),
                timeout=CALL_TIMEOUT,
            ),
        )

    async def count(self, shard: ShardRef, gallery: str) -> int:
        """Faces of the gallery on the shard (0 if it has none)."""
        stats = await self._guard(shard, self._stub(shard).Stats(pb.StatsRequest(), timeout=10.0))
        assert isinstance(stats, pb.StatsResponse)
        for g in stats.galleries:
            if g.name == gallery:
                return int(g.count)
        return 0
