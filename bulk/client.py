"""The FindFace REST API as mass-enroll uses it: POST /face, the face listing, galleries.

Only the public API, over HTTP with keep-alive connections, so the tool works against FaceGrid
and against any FindFace-compatible server alike. Every answer of a POST is sorted into one of
three kinds, because each asks for a different next step:

- `Outcome`: the server answered; the face ids, or the error code it gave (`BAD_PARAM` for a
  photo without a face, ...). Recorded as it is.
- `Unsent`: the request certainly never reached the server (connection refused): safe to send
  again.
- `Uncertain`: the request may have been processed (a timeout, a connection dropped while
  waiting, a 5xx from a proxy that gave up on the backend). Never sent again until the face
  listing shows that it was not enrolled (`recovery.py`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from facegrid.bulk.job import Outcome

# Answers that say nothing was written: the request was refused before any work.
_RETRYABLE_STATUS = frozenset({408, 429})


class ApiUnusable(Exception):
    """The API cannot be used at all (wrong token, unknown gallery, not an API): stop the run."""


@dataclass(frozen=True)
class Unsent:
    reason: str


@dataclass(frozen=True)
class Uncertain:
    reason: str


@dataclass(frozen=True)
class Wanted:
    """Which optional parts of the face to ask for (/v1 only)."""

    mf_selector: str | None = None
    gender: bool = False
    age: bool = False
    emotions: bool = False


@dataclass(frozen=True)
class ListedFace:
    id: int
    photo_hash: str
    meta: str


def api_root(url: str) -> tuple[str, str]:
    """(base URL, API version) from --api: `http://host:8000/` means /v1; a URL ending in
    /v0 or /v1 keeps that version."""
    base = url.rstrip("/")
    for version in ("v0", "v1"):
        if base.endswith(f"/{version}"):
            return base.removesuffix(f"/{version}"), version
    return base, "v1"


class FaceApi:
    """One HTTP connection pool to the API; `parallel` connections stay open (keep-alive)."""

    def __init__(self, url: str, token: str, *, parallel: int, timeout: float = 60.0) -> None:
        base, self.version = api_root(url)
        self._http = httpx.AsyncClient(
            base_url=base,
            headers={"Authorization": f"Token {token}"},
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(
                max_connections=parallel + 2, max_keepalive_connections=parallel + 2
            ),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _path(self, path: str) -> str:
        return f"/{self.version}/{path}"

    async def _get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            response = await self._http.get(self._path(path), params=params)
        except httpx.HTTPError as e:
            raise ApiUnusable(f"GET {path}: {type(e).__name__}: {e}") from e
        if response.status_code in (401, 403):
            raise ApiUnusable(f"GET {path}: {response.status_code} {_error(response)[1]}")
        if response.status_code != 200:
            raise ApiUnusable(f"GET {path}: HTTP {response.status_code} {_error(response)[1]}")
        try:
            return response.json()
        except ValueError as e:
            raise ApiUnusable(f"GET {path}: the answer is not JSON; is --api right?") from e

    async def check_gallery(self, gallery: str) -> None:
        """Stop early, with a clear message, on a bad token or a gallery that does not exist."""
        body = await self._get_json("galleries")
        names = {g if isinstance(g, str) else g.get("name") for g in body.get("results", [])}
        if gallery not in names:
            raise ApiUnusable(
                f"there is no gallery {gallery!r} (galleries: {', '.join(sorted(map(str, names)))})"
            )

    async def newest_face(self, gallery: str) -> int:
        body = await self._get_json(f"faces/gallery/{gallery}", {"limit": 1})
        results = body.get("results", [])
        return int(results[0]["id"]) if results else 0

    async def faces_above(self, gallery: str, watermark: int) -> AsyncIterator[ListedFace]:
        """Every face of the gallery with an id above `watermark`, newest first (face ids only
        grow, in FindFace and in FaceGrid)."""
        max_id: int | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if max_id is not None:
                params["max_id"] = max_id
            page = (await self._get_json(f"faces/gallery/{gallery}", params)).get("results", [])
            for face in page:
                if int(face["id"]) <= watermark:
                    return
                yield ListedFace(int(face["id"]), str(face.get("photo_hash", "")), face["meta"])
            if len(page) < 1000:
                return
            max_id = int(page[-1]["id"])

    async def enroll(
        self, photo: bytes, name: str, meta: str, gallery: str, wanted: Wanted
    ) -> Outcome | Unsent | Uncertain:
        data: dict[str, str] = {"meta": meta}
        if gallery != "default":
            data["galleries"] = json.dumps([gallery])
        if wanted.mf_selector:
            data["mf_selector"] = wanted.mf_selector
        if self.version != "v0":
            for flag in ("gender", "age", "emotions"):
                if getattr(wanted, flag):
                    data[flag] = "true"
        try:
            response = await self._http.post(
                self._path("face"), data=data, files={"photo": (name, photo)}
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
            return Unsent(f"{type(e).__name__}: {e}")
        except httpx.HTTPError as e:
            return Uncertain(f"{type(e).__name__}: {e}")
        if response.status_code == 200:
            try:
                results = response.json()["results"]
                return Outcome(faces=tuple(int(f["id"]) for f in results))
            except (ValueError, KeyError, TypeError) as e:
                return Uncertain(f"an answer that is not a face list: {e}")
        if response.status_code == 401:
            raise ApiUnusable(f"the API refused the token: {_error(response)[1]}")
        if response.status_code in _RETRYABLE_STATUS:
            return Unsent(f"HTTP {response.status_code}")
        if response.status_code >= 500:
            code, reason = _error(response)
            return Uncertain(f"HTTP {response.status_code} {code}: {reason}")
        code, reason = _error(response)
        return Outcome(code=code, reason=reason)


def _error(response: httpx.Response) -> tuple[str, str]:
    """The FindFace error body's (code, reason), or the HTTP status when there is none."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "code" in body:
        return str(body["code"]), str(body.get("reason", ""))
    return f"HTTP_{response.status_code}", response.text[:200]
