"""The licence in force, its limits, and what the components report in use.

Until signed licence files are supported, the built-in evaluation licence applies: small limits
that let one machine try everything. Limits are never read from settings, so they cannot be
raised by editing a config file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

RESOURCES = ("faces", "cameras", "shards", "extractors")

EVALUATION_LIMITS: dict[str, int] = {"faces": 100_000, "cameras": 4, "shards": 4, "extractors": 2}
EVALUATION_FEATURES = ("gender", "age", "emotions", "video")


class UnknownResource(ValueError):
    pass


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    reason: str = ""


@dataclass
class _Instance:
    component: str
    usage: dict[str, int]
    seen_at: float


@dataclass
class License:
    license_id: str = ""
    licensee: str = "evaluation"
    limits: dict[str, int] = field(default_factory=lambda: dict(EVALUATION_LIMITS))
    features: tuple[str, ...] = EVALUATION_FEATURES
    expires_at: float | None = None

    def valid(self, now: float) -> tuple[bool, str]:
        if self.expires_at is not None and now >= self.expires_at:
            return False, "the licence has expired"
        return True, ""


class LicenseServer:
    """Answers limit checks and tracks usage from component heartbeats."""

    def __init__(
        self,
        license: License,
        heartbeat_interval: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.license = license
        self.heartbeat_interval = heartbeat_interval
        self._clock = clock
        self._instances: dict[str, _Instance] = {}

    def check(self, resource: str, amount: int, in_use: int | None = None) -> Decision:
        if resource not in RESOURCES:
            raise UnknownResource(f"unknown resource {resource!r}; known: {', '.join(RESOURCES)}")
        limit = self.license.limits.get(resource, 0)
        valid, why = self.license.valid(time.time())
        if not valid:
            return Decision(False, limit, why)
        used = self.in_use(resource) if in_use is None else in_use
        if limit and used + amount > limit:
            return Decision(
                False, limit, f"licence allows {limit} {resource}; {used} in use, {amount} asked"
            )
        return Decision(True, limit)

    def heartbeat(self, component: str, instance: str, usage: dict[str, int]) -> bool:
        self._instances[instance] = _Instance(component, dict(usage), self._clock())
        return self.license.valid(time.time())[0]

    def in_use(self, resource: str) -> int:
        """The sum over instances whose heartbeats are current (three intervals of slack)."""
        horizon = self._clock() - 3 * self.heartbeat_interval
        return sum(
            i.usage.get(resource, 0) for i in self._instances.values() if i.seen_at >= horizon
        )
