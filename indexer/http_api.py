"""The seed's shard HTTP API (tntapi), for compatibility and operations.

    POST   /v1/:gallery/add/:id                      raw facen body; 409 when the id exists
    GET    /v1/:gallery/get/:id                      {"facen": base64, "id": id}; 404 if absent
    DELETE /v1/:gallery/del/:id                      404 if absent
    POST   /v1/:gallery/search/:limit/:threshold     raw facen body; [{"conf", "id"}]
                                                     ?linear_search=1 searches exactly;
                                                     X-search-stat: with_index|without_index
    GET    /v1/:gallery/list/:start_id/:count        {"faces": [{"id", "space", "facen"}],
                                                     "next": id} (next only if more remain)
    GET    /stat/list/:start/:limit                  {"galleries": [...], "total": n}
    GET    /stat/info/:name                          one gallery's counters

A facen is the vector as raw little-endian float32, as the seed sends it. Thresholds are the
seed's 0..1 confidence (see facegrid.confidence). Successes answer as the seed does; failures
answer with a status other than 200 and the reason as plain text. The "linear" space is our
exact store and "indexed" the HNSW graph; the seed's "preindex" space has no counterpart (its
counters are 0).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from facegrid.confidence import confidence_of, distance_for
from facegrid.indexer.core import (
    DuplicateId,
    GalleryNotFound,
    IndexerError,
    InvalidRequest,
    Shard,
)
from facegrid.indexer.replica import PRIMARY, ReplicationState

T = TypeVar("T")
MAX_U64 = (1 << 64) - 1
MAX_LIST = 10_000

_STATUS: list[tuple[type[IndexerError], int]] = [
    (InvalidRequest, 400),
    (GalleryNotFound, 404),
    (DuplicateId, 409),
]


class _HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _int(request: Request, name: str, low: int = 0, high: int = MAX_U64) -> int:
    raw = request.path_params[name]
    try:
        value = int(raw)
    except ValueError:
        raise _HttpError(400, f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise _HttpError(400, f"{name} must be within {low}..{high}, got {value}")
    return value


async def _facen(request: Request) -> np.ndarray:
    body = await request.body()
    if not body or len(body) % 4:
        raise _HttpError(400, "the body must be a facen: a non-empty run of float32 values")
    return np.frombuffer(body, dtype="<f4").astype(np.float32)


def create_app(
    shard: Shard, state: ReplicationState, fast_index: Callable[[], bool] = lambda: True
) -> Starlette:
    """fast_index: whether the licence allows searching the HNSW graph (else: exact only)."""

    async def run(fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except IndexerError as e:
            for kind, status in _STATUS:
                if isinstance(e, kind):
                    raise _HttpError(status, str(e)) from e
            raise

    def writable() -> None:
        if state.role != PRIMARY:
            raise _HttpError(403, f"this shard follows {state.primary}; send writes to the primary")

    async def add(request: Request) -> Response:
        writable()
        face_id = _int(request, "id", 1)
        vector = await _facen(request)
        gallery = request.path_params["gallery"]
        await run(lambda: shard.add(gallery, np.array([face_id], np.uint64), vector[None, :]))
        return Response(status_code=200)

    async def get(request: Request) -> Response:
        face_id = _int(request, "id", 1)
        gallery = request.path_params["gallery"]
        found, vectors = await run(lambda: shard.get(gallery, np.array([face_id], np.uint64)))
        if not len(found):
            raise _HttpError(404, f"face {face_id} is not in gallery {gallery!r}")
        facen = base64.b64encode(vectors[0].astype("<f4").tobytes()).decode()
        return JSONResponse({"facen": facen, "id": face_id})

    async def delete(request: Request) -> Response:
        writable()
        face_id = _int(request, "id", 1)
        gallery = request.path_params["gallery"]
        deleted, _ = await run(lambda: shard.delete(gallery, np.array([face_id], np.uint64)))
        if not deleted:
            raise _HttpError(404, f"face {face_id} is not in gallery {gallery!r}")
        return Response(status_code=200)

    async def search(request: Request) -> Response:
        limit = _int(request, "limit", 1, MAX_LIST)
        raw = request.path_params["threshold"]
        try:
            max_distance = distance_for(float(raw))
        except ValueError:
            raise _HttpError(400, f"threshold must be a number within 0..1, got {raw!r}") from None
        linear = request.query_params.get("linear_search", "0").lower() in ("1", "true")
        vector = await _facen(request)
        gallery = request.path_params["gallery"]
        result = await run(
            lambda: shard.search(
                gallery,
                vector,
                limit,
                0.0 if max_distance == float("inf") else max_distance,
                exact=linear or not fast_index(),
            )
        )
        body = [{"conf": round(confidence_of(d), 6), "id": i} for i, d in result.hits]
        stat = "with_index" if result.used_index else "without_index"
        return JSONResponse(body, headers={"X-search-stat": stat})

    async def list_faces(request: Request) -> Response:
        start = _int(request, "start_id")
        count = _int(request, "count", 1, MAX_LIST)
        gallery = request.path_params["gallery"]

        def page() -> tuple[list[int], list[str], np.ndarray, int | None]:
            ids, _ = shard.list_ids(gallery, max(start - 1, 0), count + 1)
            if start == 0 and len(ids) and ids[0] == 0:
                ids = ids[1:]
            following = int(ids[count]) if len(ids) > count else None
            ids = ids[:count]
            found, vectors = shard.get(gallery, ids)
            return found.tolist(), shard.spaces(gallery, found), vectors, following

        ids, spaces, vectors, following = await run(page)
        faces = [
            {
                "id": face_id,
                "space": space,
                "facen": base64.b64encode(vector.astype("<f4").tobytes()).decode(),
            }
            for face_id, space, vector in zip(ids, spaces, vectors, strict=True)
        ]
        body: dict[str, object] = {"faces": faces}
        if following is not None:
            body["next"] = following
        return JSONResponse(body)

    def _gallery_counts(number: int, name: str) -> dict[str, object]:
        stats = {g.name: g for g in shard.stats().galleries}[name]
        return {
            "id": number,
            "name": name,
            "cnt_indexed": stats.indexed,
            "cnt_linear": stats.unindexed,
            "cnt_preindex": 0,
        }

    async def stat_list(request: Request) -> Response:
        start = _int(request, "start", 1)
        limit = _int(request, "limit", 1, MAX_LIST)
        stats = await run(shard.stats)
        names = [g.name for g in stats.galleries]
        chosen = list(enumerate(names, start=1))[start - 1 : start - 1 + limit]
        galleries = await run(lambda: [_gallery_counts(n, name) for n, name in chosen])
        return JSONResponse({"galleries": galleries, "total": len(names)})

    async def stat_info(request: Request) -> Response:
        name = request.path_params["name"]
        stats = await run(shard.stats)
        numbers = {g.name: n for n, g in enumerate(stats.galleries, start=1)}
        if name not in numbers:
            raise _HttpError(404, f"gallery {name!r} has no vectors on this shard")
        gallery = next(g for g in stats.galleries if g.name == name)
        indexed = await run(lambda: shard.has_graph(name))
        return JSONResponse(
            {
                **_gallery_counts(numbers[name], name),
                "cnt_indexed_deleted": gallery.deleted,
                "cnt_preindex_deleted": 0,
                "index_loaded": indexed,
                "index_file": "hnsw" if indexed else "none",
                # The seed shows an internal pointer here; we show the log position.
                "cptr": stats.lsn,
            }
        )

    def route(path: str, handler: Callable[[Request], Awaitable[Response]], method: str) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except _HttpError as e:
                return PlainTextResponse(str(e), status_code=e.status)

        return Route(path, endpoint, methods=[method])

    return Starlette(
        routes=[
            route("/v1/{gallery}/add/{id}", add, "POST"),
            route("/v1/{gallery}/get/{id}", get, "GET"),
            route("/v1/{gallery}/del/{id}", delete, "DELETE"),
            route("/v1/{gallery}/search/{limit}/{threshold}", search, "POST"),
            route("/v1/{gallery}/list/{start_id}/{count}", list_faces, "GET"),
            route("/stat/list/{start}/{limit}", stat_list, "GET"),
            route("/stat/info/{name}", stat_info, "GET"),
        ]
    )
