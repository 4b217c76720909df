"""Spreading items evenly over bins while moving as few as possible: the rule behind both slot
placement (slots over shards) and camera assignment (cameras over worker pods)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

Item = TypeVar("Item", bound=Hashable)
Bin = TypeVar("Bin", bound=Hashable)


def spread_evenly(
    items: Sequence[Item],
    bins: Sequence[Bin],
    current: Callable[[Item], Bin | None],
    order: Callable[[Item], Any],
) -> dict[Item, Bin]:
    """Each item's bin. The shares differ by at most one, and the bins holding the most now
    get the larger shares. A bin keeps its items (the first of them in `items` order) up to
    its share; the rest, and items whose bin is not in `bins`, fill the bins short of their
    share, bin by bin, in `order`."""
    held: dict[Bin, list[Item]] = {b: [] for b in bins}
    loose: list[Item] = []
    for item in items:
        where = current(item)
        if where is not None and where in held:
            held[where].append(item)
        else:
            loose.append(item)
    base, extra = divmod(len(items), len(bins))
    by_load = sorted(bins, key=lambda b: (-len(held[b]), bins.index(b)))
    share = {b: base + (1 if rank < extra else 0) for rank, b in enumerate(by_load)}
    result: dict[Item, Bin] = {}
    for b in bins:
        loose.extend(held[b][share[b] :])
        for item in held[b][: share[b]]:
            result[item] = b
    free = iter(sorted(loose, key=order))
    for b in bins:
        for _ in range(share[b] - min(len(held[b]), share[b])):
            result[next(free)] = b
    return result
