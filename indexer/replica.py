"""Following a primary shard: start from its snapshot when needed, then tail its log.

The follower writes the primary's records into its own log with the primary's lsns, so the two
logs agree record for record and a promoted follower continues the same numbering. It asks to
resume after its own last lsn; when the primary's log no longer holds that (or the follower is
ahead, which only a failover leaves behind) it fetches the primary's snapshot and starts over
from it. Connection failures are retried with capped exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from facegrid.files import fsync_path
from facegrid.indexer.core import IndexerError, Shard
from facegrid.indexer.wire import record_from_wire
from facegrid.v1 import index_pb2 as pb
from facegrid.v1 import index_pb2_grpc

log = logging.getLogger(__name__)

PRIMARY = "primary"
FOLLOWER = "follower"
INCOMING = ".incoming-snapshot"


@dataclass
class ReplicationState:
    """The shard's role, and for a follower what it knows of its primary."""

    role: str = PRIMARY
    primary: str = ""
    primary_lsn: int = 0
    # When the follower last had every record the primary had told it of.
    caught_up_at: float = field(default_factory=time.monotonic)

    def lag(self, lsn: int) -> int:
        return max(0, self.primary_lsn - lsn) if self.role == FOLLOWER else 0

    def lag_seconds(self, lsn: int) -> float:
        if not self.lag(lsn):
            return 0.0
        return time.monotonic() - self.caught_up_at

    def observe(self, primary_lsn: int, own_lsn: int) -> None:
        self.primary_lsn = max(self.primary_lsn, primary_lsn)
        if own_lsn >= self.primary_lsn:
            self.caught_up_at = time.monotonic()


class Follower:
    def __init__(
        self,
        shard: Shard,
        state: ReplicationState,
        data_dir: Path,
        *,
        poll_seconds: float = 1.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._shard = shard
        self._state = state
        self._dir = data_dir
        self._poll_seconds = poll_seconds
        self._max_backoff = max_backoff
        self.snapshots_installed = 0
        self._connected = False

    async def run(self) -> None:
        """Follow until cancelled or promoted."""
        delay = 0.1
        while self._state.role == FOLLOWER:
            try:
                async with grpc.aio.insecure_channel(self._state.primary) as channel:
                    stub = index_pb2_grpc.IndexShardStub(channel)
                    poller = asyncio.create_task(self._poll(stub))
                    try:
                        await self._follow(stub)
                    finally:
                        poller.cancel()
            except grpc.aio.AioRpcError as e:
                log.warning("following %s: %s %s", self._state.primary, e.code(), e.details())
            except IndexerError as e:
                log.warning("following %s: %s; resuming", self._state.primary, e)
            if self._state.role != FOLLOWER:
                return
            # Back off while the primary stays away; start small again once it answered.
            delay = 0.1 if self._connected else min(delay * 2, self._max_backoff)
            self._connected = False
            await asyncio.sleep(delay)

    async def _follow(self, stub: index_pb2_grpc.IndexShardAsyncStub) -> None:
        stats = await stub.Stats(pb.StatsRequest(), timeout=10)
        self._connected = True
        self._state.observe(stats.lsn, self._shard.lsn)
        if self._shard.lsn > stats.lsn:
            log.warning(
                "this follower is at lsn %d, ahead of its primary (%d): starting over from the "
                "primary's snapshot",
                self._shard.lsn,
                stats.lsn,
            )
            await self._bootstrap(stub)
        try:
            await self._tail(stub)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            log.info("primary's log starts after lsn %d: fetching its snapshot", self._shard.lsn)
            await self._bootstrap(stub)
            await self._tail(stub)

    async def _tail(self, stub: index_pb2_grpc.IndexShardAsyncStub) -> None:
        stream = stub.Replicate(pb.ReplicateRequest(after_lsn=self._shard.lsn))
        async for message in stream:
            if self._state.role != FOLLOWER:
                stream.cancel()
                return
            record = record_from_wire(message)
            await asyncio.to_thread(self._shard.apply_replicated, record)
            self._state.observe(record.lsn, self._shard.lsn)

    async def _poll(self, stub: index_pb2_grpc.IndexShardAsyncStub) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                stats = await stub.Stats(pb.StatsRequest(), timeout=self._poll_seconds * 5)
            except grpc.aio.AioRpcError:
                continue
            self._state.observe(stats.lsn, self._shard.lsn)

    async def _bootstrap(self, stub: index_pb2_grpc.IndexShardAsyncStub) -> None:
        incoming = self._dir / INCOMING
        await asyncio.to_thread(shutil.rmtree, incoming, True)
        incoming.mkdir()
        files: set[str] = set()
        async for chunk in stub.FetchSnapshot(pb.FetchSnapshotRequest()):
            name = Path(chunk.file).name
            if name != chunk.file or name in ("", ".", ".."):
                raise IndexerError(f"the primary sent a snapshot file named {chunk.file!r}")
            await asyncio.to_thread(_append, incoming / name, chunk.data)
            files.add(name)
        for name in files:
            await asyncio.to_thread(fsync_path, incoming / name)
        lsn = await asyncio.to_thread(self._shard.install_snapshot, incoming)
        self.snapshots_installed += 1
        log.info("installed the primary's snapshot at lsn %d", lsn)


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)
