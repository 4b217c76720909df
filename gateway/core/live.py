"""Live events beyond the seed: every history event is published; clients follow them over
Server-Sent Events or receive them at webhooks.

Webhooks are delivered at least once: an event is acknowledged only after every matching
webhook took it (2xx) or ran out of attempts, so a gateway that dies mid-delivery redelivers
after a restart. Each delivery is signed: `X-FaceGrid-Signature: sha256=<hex HMAC of the body
with the webhook's secret>`, so a receiver can check it came from us.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from facegrid.gateway.core.errors import BadParam
from facegrid.gateway.core.model import iso_time, media_url
from facegrid.gateway.core.persons import Event

SIGNATURE_HEADER = "X-FaceGrid-Signature"


def event_body(event: Event, base_url: str = "") -> dict[str, Any]:
    return {
        "type": "face",
        "event_id": event.id,
        "face_id": event.face_id,
        "person_id": event.person_id,
        "cam_id": event.cam_id,
        "friend": event.friend,
        "meta": event.meta,
        "photo": media_url(event.photo, base_url),
        "photo_hash": event.photo_hash,
        "screenshot": media_url(event.screenshot, base_url),
        "timestamp": iso_time(event.timestamp),
        **event.bbox.as_dict(),
    }


class EventBus(Protocol):
    async def publish(self, body: dict[str, Any]) -> str:
        """Append an event; returns its stream id."""
        ...

    def follow(self, after: str | None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Events after the given stream id (only new ones when None), as they come."""
        ...


@dataclass(frozen=True)
class Filters:
    cam_ids: tuple[str, ...] = ()
    person_ids: tuple[int, ...] = ()
    friend: bool | None = None

    def match(self, body: dict[str, Any]) -> bool:
        if self.cam_ids and body.get("cam_id") not in self.cam_ids:
            return False
        if self.person_ids and body.get("person_id") not in self.person_ids:
            return False
        return self.friend is None or body.get("friend") == self.friend


@dataclass(frozen=True)
class Webhook:
    id: str
    url: str
    secret: str
    filters: Filters = field(default_factory=Filters)
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def as_dict(self, with_secret: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "cam_ids": list(self.filters.cam_ids),
            "person_ids": list(self.filters.person_ids),
            "friend": self.filters.friend,
        }
        if with_secret:
            body["secret"] = self.secret
        return body


class WebhookStore(Protocol):
    async def add(self, webhook: Webhook) -> None: ...

    async def list(self) -> list[Webhook]: ...

    async def delete(self, webhook_id: str) -> bool: ...


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def new_webhook(url: Any, secret: Any, filters: Filters) -> Webhook:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BadParam("url must be an http(s) URL", param="url", value=url)
    if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
        raise BadParam("secret must be at least 16 characters", param="secret")
    return Webhook(
        id=secrets.token_hex(8),
        url=url,
        secret=secret or secrets.token_urlsafe(24),
        filters=filters,
    )


def parse_filters(cam_ids: Sequence[str], person_ids: Any, friend: bool | None) -> Filters:
    ids: list[int] = []
    if person_ids not in (None, "", []):
        if isinstance(person_ids, str):
            person_ids = person_ids.split(",")
        if not isinstance(person_ids, list):
            raise BadParam("person_ids must be an array", param="person_ids", value=person_ids)
        try:
            ids = [int(p) for p in person_ids]
        except (TypeError, ValueError):
            raise BadParam("person_ids must be integers", param="person_ids") from None
    return Filters(tuple(cam_ids), tuple(ids), friend)
