"""The licence's limits as the gateway applies them: faces stored and cameras registered.

Both counts come from where the gateway keeps them (MongoDB, the control plane). The faces count
is cached for a few seconds and advanced by each add; before refusing, it is counted again, so
a limit is never reported reached on a stale count. Several gateways adding at once near the
limit can pass it by the faces they add in the same moment; nothing is ever half-written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from facegrid.gateway.core.errors import LicenceError
from facegrid.licence import LicenceClient, LicenceRefused

Count = Callable[[], Awaitable[int]]


def _checked(licence: LicenceClient) -> None:
    try:
        licence.check()
    except LicenceRefused as e:
        raise LicenceError(str(e)) from None


class LicensedCount:
    """A Quota for one resource of the licence, over a count of what is in use."""

    def __init__(
        self,
        licence: LicenceClient,
        resource: str,
        count: Count,
        *,
        fresh_for: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._licence = licence
        self._resource = resource
        self._count = count
        self._fresh_for = fresh_for
        self._clock = clock
        self._known = 0
        self._known_at = float("-inf")
        self._lock = asyncio.Lock()

    async def in_use(self) -> int:
        """The count, at most fresh_for seconds old (also reported in heartbeats)."""
        if self._clock() - self._known_at > self._fresh_for:
            await self._recount()
        return self._known

    async def reserve(self, count: int) -> None:
        _checked(self._licence)
        limit = self._licence.limit(self._resource)
        if limit is None:
            return
        async with self._lock:
            used = await self.in_use()
            if used + count > limit:
                await self._recount()
                used = self._known
            if used + count > limit:
                raise LicenceError(
                    f"the licence allows {limit} {self._resource}; {used} are in use and "
                    f"{count} more were asked"
                )
            self._known += count

    async def _recount(self) -> None:
        self._known = await self._count()
        self._known_at = self._clock()
