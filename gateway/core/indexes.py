"""Which index serves each gallery, and with which model.

The vectors of a gallery's faces live in an index on the shards: a gallery in the control plane,
named like the gallery itself until a model migration gives it another one. Every index holds
vectors of one model. A migration (`facegrid migrate`) builds each gallery's faces into a shadow
index with the new model while the old index serves; when the shadow is complete the gallery is
switched to it in one write, and the old index goes on being written until the switch is
confirmed, so switching back loses nothing. Searches ask the active index only, with a query
vector of the active index's model: they never mix vectors of two models.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from facegrid.gateway.core.errors import ServiceUnavailable
from facegrid.gateway.core.persons import INTERNAL_PREFIX
from facegrid.gateway.core.ports import Extractor

# Indexes made by migrations are internal galleries with this prefix (see shadow_index).
SHADOW_PREFIX = f"{INTERNAL_PREFIX}mx-"


@dataclass(frozen=True)
class ModelIndex:
    model: str
    # The control-plane gallery that holds the vectors on the shards.
    index: str


@dataclass(frozen=True)
class GalleryIndexes:
    gallery: str
    active: ModelIndex
    # Written but not searched: a migration's shadow index while it is built, or the index
    # switched away from until the switch is confirmed.
    also: tuple[ModelIndex, ...] = ()

    @property
    def written(self) -> tuple[ModelIndex, ...]:
        return (self.active, *self.also)


def shadow_index(gallery: str, model: str) -> str:
    """The index a migration builds for the gallery with the model (a valid gallery name)."""
    digest = hashlib.sha256(f"{gallery}\n{model}".encode()).hexdigest()[:16]
    return f"{SHADOW_PREFIX}{digest}"


def model_key(model: str) -> str:
    """The model's name as a MongoDB field name ('.' and '$' are not allowed in one)."""
    return re.sub(r"[^A-Za-z0-9_@-]", "_", model)


class IndexPlans(Protocol):
    """Where each gallery's index plan is kept (MongoDB, shared by every gateway)."""

    async def plan(self, gallery: str, default_model: str) -> GalleryIndexes:
        """The gallery's plan; one without a plan is its own index with default_model."""
        ...

    async def record(self, plan: GalleryIndexes) -> None:
        """Keep the plan of a gallery that had none, once vectors were written by it, so that
        a later change of the default extractor cannot reinterpret them."""
        ...

    async def forget(self, gallery: str) -> list[str]:
        """Drop the gallery's plan; returns the indexes other than the gallery itself."""
        ...


class NoMigrations:
    """Plans for a gateway without migrations: every gallery is its own index."""

    async def plan(self, gallery: str, default_model: str) -> GalleryIndexes:
        return GalleryIndexes(gallery, ModelIndex(default_model, gallery))

    async def record(self, plan: GalleryIndexes) -> None:
        return None

    async def forget(self, gallery: str) -> list[str]:
        return []


class Models:
    """The gateway's extractors by the model they serve, and the galleries' index plans.

    The first extractor is the default: it finds faces and makes the vectors new faces are
    stored with. The others are asked only for vectors of their model, from the aligned face.
    """

    def __init__(
        self,
        default: Extractor,
        others: list[Extractor] | None = None,
        plans: IndexPlans | None = None,
    ) -> None:
        self.default = default
        self._all = [default, *(others or [])]
        self._by_model: dict[str, Extractor] = {}
        self._plans = plans or NoMigrations()

    async def _learn(self) -> None:
        for extractor in self._all:
            if extractor in self._by_model.values():
                continue
            try:
                self._by_model[await extractor.model()] = extractor
            except ServiceUnavailable:
                if extractor is self.default:
                    raise
                # Another extractor that is down: asked again next time.

    async def default_model(self) -> str:
        for model, extractor in self._by_model.items():
            if extractor is self.default:
                return model
        await self._learn()
        return await self.default_model()

    async def extractor(self, model: str) -> Extractor | None:
        if model not in self._by_model:
            await self._learn()
        return self._by_model.get(model)

    async def require(self, model: str, gallery: str) -> Extractor:
        extractor = await self.extractor(model)
        if extractor is None:
            raise ServiceUnavailable(
                f"gallery {gallery!r} is served by model {model}, which no extractor of this "
                "gateway serves (FACEGRID_GATEWAY_EXTRA_EXTRACTORS)"
            )
        return extractor

    async def plan(self, gallery: str) -> GalleryIndexes:
        return await self._plans.plan(gallery, await self.default_model())

    async def record(self, plans: Sequence[GalleryIndexes]) -> None:
        for plan in plans:
            await self._plans.record(plan)

    async def forget(self, gallery: str) -> list[str]:
        return await self._plans.forget(gallery)
