"""The licence in force, its limits, and what the components use of them.

The license server holds at most one licence, read from a licence file (offline), fetched from
an upstream license server (online), or none: community mode, whose limits are stated here and
in the README. Countable capacity is tracked two ways: faces are counted by the gateway and
reported in its heartbeats; camera slots and extractor instances are leases that a component
takes before it starts the work and that lapse when it stops heartbeating. Limits are never
read from settings, so they cannot be raised by editing a config file.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from facegrid.licence_terms import COMMUNITY_LIMITS, FEATURES

# What a licence counts (FEATURES: what it switches on; COMMUNITY_LIMITS: without one).
RESOURCES = ("faces", "cameras", "extractors")
# Capacity taken as leases (the rest is counted by the component that uses it).
LEASED = ("cameras", "extractors")


# The reference's reading of `last_updated` (seconds since the licence source last answered):
# up to 5 fine, up to 30 suspect, up to 120 bad, beyond that the licence has timed out.
SOURCE_TIMEOUT = 120.0


class LicenceError(Exception):
    """A licence that cannot be used, or work the licence does not allow; the message says
    why, for license.json and the services' errors."""


class UnknownResource(ValueError):
    pass


@dataclass(frozen=True)
class Licence:
    license_id: str
    customer: str
    generated: float
    # Unix time it ends; None: it does not.
    expires: float | None = None
    # The installation it is for ("" for any).
    installation: str = ""
    # Resource -> how many; a resource left out is unlimited.
    limits: dict[str, int] = field(default_factory=dict)
    features: frozenset[str] = frozenset(FEATURES)


COMMUNITY = Licence(
    license_id="", customer="community", generated=0.0, limits=dict(COMMUNITY_LIMITS)
)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # None: unlimited.
    limit: int | None
    reason: str = ""
    lease_id: str = ""


@dataclass
class _Instance:
    component: str
    address: str
    usage: dict[str, int]
    seen_at: float


@dataclass
class _Lease:
    resource: str
    holder: str
    count: int


class LicenseServer:
    """The licence in force and its use; fed by a source loop (file or upstream) and by the
    components' heartbeats and lease requests."""

    def __init__(
        self,
        *,
        heartbeat_interval: int,
        mode: str = "community",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in ("community", "offline", "online"):
            raise ValueError(f"unknown licensing mode {mode!r}")
        self.heartbeat_interval = heartbeat_interval
        self.mode = mode
        self.clock = clock
        self._licence: Licence | None = COMMUNITY if mode == "community" else None
        self.licence_file = b""
        self.source = ""
        # Why the source's latest answer could not be used ("" when it could).
        self._problem = "" if mode == "community" else "no licence has been read yet"
        self._checked_at = clock()
        self._instances: dict[str, _Instance] = {}
        self._leases: dict[str, _Lease] = {}

    # The source loop's side.

    def install(self, licence: Licence, source: str, mode: str, data: bytes = b"") -> None:
        """The source answered with a valid licence (COMMUNITY when there is none to read);
        data is its file, served on to downstream license servers."""
        self._licence = licence
        self.licence_file = data
        self.source = source
        self.mode = mode
        self._problem = ""
        self._checked_at = self.clock()

    def refuse(self, reason: str, source: str, mode: str) -> None:
        """The source answered with a licence that cannot be used: none is in force."""
        self._licence = None
        self.licence_file = b""
        self.source = source
        self.mode = mode
        self._problem = reason
        self._checked_at = self.clock()

    def unreachable(self, reason: str) -> None:
        """The source did not answer: the licence in force stays until SOURCE_TIMEOUT."""
        self._problem = reason

    # What the components ask.

    @property
    def licence(self) -> Licence | None:
        return self._licence

    def last_updated(self) -> float:
        return max(self.clock() - self._checked_at, 0.0)

    def validity(self) -> tuple[bool, str]:
        """Whether the licence may be used now, and why not (or a warning)."""
        licence = self._licence
        if licence is None:
            return False, self._problem
        if self.source:  # a folder or an upstream server that should keep answering
            silent = self.last_updated()
            if silent > SOURCE_TIMEOUT:
                return False, (
                    f"the licence source has not answered for {silent:.0f} s "
                    f"(last error: {self._problem or 'none'})"
                )
        if licence.expires is not None and self.clock() >= licence.expires:
            when = dt.datetime.fromtimestamp(licence.expires, dt.UTC).isoformat(timespec="seconds")
            return False, f"the licence expired on {when}"
        return True, self._problem

    def features(self) -> frozenset[str]:
        valid, _ = self.validity()
        return self._licence.features if valid and self._licence else frozenset()

    def limit(self, resource: str) -> int | None:
        if resource not in RESOURCES:
            raise UnknownResource(f"unknown resource {resource!r}; known: {', '.join(RESOURCES)}")
        licence = self._licence
        return None if licence is None else licence.limits.get(resource)

    def check(self, resource: str, amount: int, in_use: int | None = None) -> Decision:
        """Whether amount more of resource fit; in_use when the caller counts it itself."""
        limit = self.limit(resource)
        valid, why = self.validity()
        if not valid:
            return Decision(False, limit, f"no valid licence: {why}")
        used = self.in_use(resource) if in_use is None else in_use
        if limit is not None and used + amount > limit:
            return Decision(
                False,
                limit,
                f"the licence allows {limit} {resource}; {used} in use, {amount} more asked",
            )
        return Decision(True, limit)

    def acquire(self, resource: str, holder: str, count: int = 1) -> Decision:
        """A lease on count units of a leased resource for holder (a component instance)."""
        if resource not in LEASED:
            raise UnknownResource(f"{resource!r} is not leased; leased: {', '.join(LEASED)}")
        decision = self.check(resource, count)
        if not decision.allowed:
            return decision
        lease_id = uuid.uuid4().hex
        self._leases[lease_id] = _Lease(resource, holder, count)
        self._instances.setdefault(holder, _Instance("", "", {}, self.clock()))
        return Decision(True, decision.limit, lease_id=lease_id)

    def leases_of(self, holder: str) -> list[str]:
        return [k for k, lease in self._leases.items() if lease.holder == holder]

    def release(self, lease_id: str) -> bool:
        return self._leases.pop(lease_id, None) is not None

    def heartbeat(
        self, component: str, instance: str, usage: dict[str, int], address: str = ""
    ) -> bool:
        """A component is alive (its leases stay) and reports what it counts."""
        self._instances[instance] = _Instance(component, address, dict(usage), self.clock())
        return self.validity()[0]

    def in_use(self, resource: str) -> int:
        """Leases and reported usage of instances whose heartbeats are current (three
        intervals of slack); stale instances' leases are dropped."""
        self._expire()
        if resource in LEASED:
            return sum(lease.count for lease in self._leases.values() if lease.resource == resource)
        return sum(i.usage.get(resource, 0) for i in self._instances.values())

    def services(self) -> list[dict[str, str]]:
        self._expire()
        return [
            {"name": i.component, "ip": i.address} for i in self._instances.values() if i.component
        ]

    def info(self) -> dict[str, Any]:
        """license.json, in the reference's shape."""
        licence = self._licence
        valid, description = self.validity()
        # A licence that never expires ends at the largest time the seed shows (a monitor
        # comparing `end` with `time` must not see it as expired); no licence at all: 0.
        end = 0 if licence is None else int(licence.expires) if licence.expires else UNLIMITED
        limits: list[dict[str, Any]] = [{"type": "time", "name": "end", "value": end}]
        for resource in RESOURCES:
            limit = self.limit(resource)
            limits.append(
                {
                    "type": "number",
                    "name": resource,
                    "value": limit if limit is not None else UNLIMITED,
                    "current": self.in_use(resource),
                }
            )
        features = self.features() if valid else frozenset()
        limits += [{"type": "boolean", "name": f, "value": f in features} for f in FEATURES]
        return {
            "name": "FaceGrid licensing",
            "time": int(self.clock()),
            "type": self.mode,
            "license_id": licence.license_id if licence else "",
            "customer": licence.customer if licence else "",
            "generated": int(licence.generated) if licence else 0,
            "last_updated": int(self.last_updated()),
            "valid": {"value": valid, "description": description},
            "source": self.source,
            "limits": limits,
            "services": self.services(),
        }

    def _expire(self) -> None:
        horizon = self.clock() - 3 * self.heartbeat_interval
        stale = {k for k, i in self._instances.items() if i.seen_at < horizon}
        for key in stale:
            del self._instances[key]
        for lease_id in [k for k, lease in self._leases.items() if lease.holder in stale]:
            del self._leases[lease_id]


# license.json's value for an unlimited count, as the reference shows it.
UNLIMITED = 4_294_967_295
