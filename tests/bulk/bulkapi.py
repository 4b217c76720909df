"""Helpers for mass-enroll's tests: photos, and reading what the stack stored through the
public REST API only, as any client would."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import FACES

CHIPS = FACES / "face-api.js" / "examples" / "images"
NO_FACE = FACES / "no-faces" / "skimage" / "coffee.png"


@dataclass(frozen=True)
class Api:
    url: str
    token: str

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {self.token}"}, timeout=60
        )

    def new_gallery(self) -> str:
        """A gallery of the test's own, so that counting its faces sees no other test's."""
        name = f"g{uuid.uuid4().hex[:10]}"
        with self.client() as c:
            assert c.post(f"/v1/galleries/{name}").status_code == 201
        return name

    def faces(self, gallery: str) -> list[dict[str, Any]]:
        """Every face of the gallery, through the paged listing."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1000}
        with self.client() as c:
            while True:
                page = c.get(f"/v1/faces/gallery/{gallery}", params=params).json()["results"]
                found += page
                if len(page) < 1000:
                    return found
                params["max_id"] = page[-1]["id"]


def chips(count: int) -> list[Path]:
    """Photos of one face each (face-api.js's TV-cast chips; stuart5 has no detectable face)."""
    found = sorted(p for p in CHIPS.glob("*/*.png") if p.name != "stuart5.png")
    assert len(found) >= count
    return found[:count]
