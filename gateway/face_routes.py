"""Routes for faces: detect, verify, identify, face and faces, meta, and the media they point to.

Handlers read parameters with `read_params` (JSON, forms, multipart and the query string alike),
call the Faces service and shape its results as the seed's API does. The API version comes from
the path: /v1 adds gender, age and emotions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from facegrid.gateway import openapi as doc
from facegrid.gateway.core.errors import BadParam, NotFound
from facegrid.gateway.core.faces import PAGE_SIZE, Faces
from facegrid.gateway.core.model import (
    DEFAULT_GALLERY,
    Face,
    iso_time,
    media_url,
    parse_bbox_params,
    parse_bboxes,
    parse_bool,
    parse_galleries,
    parse_int,
    parse_json,
    parse_meta,
    parse_mf_selector,
    parse_n,
    parse_threshold,
)
from facegrid.gateway.core.persons import HistoryQuery, check_cam_id, parse_cam_ids, parse_time
from facegrid.gateway.core.ports import Detection, Extraction, MediaStore, Wanted
from facegrid.gateway.params import Fetcher, Params, photo_param, read_params

MAX_ID = (1 << 63) - 1

PAGE = {"max_id": doc.MAX_ID, "limit": doc.integer("Faces per page (default 20)", high=1000)}
BOX_CORNERS = {
    name: doc.integer(f"The face's box, {name} (with the other three, instead of bbox)", low=0)
    for name in ("x1", "y1", "x2", "y2")
}
VERIFY = {
    "photo1": doc.photo("The first photo"),
    "photo2": doc.photo("The second photo"),
    "bbox1": doc.boxes("Faces on photo1 as [[x1, y1, x2, y2], ...], instead of detecting them"),
    "bbox2": doc.boxes("Faces on photo2, likewise"),
    "threshold": doc.Param(
        "As for identify, or `none` to leave out the verdict",
        json={"oneOf": [doc.THRESHOLD.json, {"type": "string", "enum": ["none"]}]},
    ),
    "mf_selector": doc.MF_SELECTOR,
}
IDENTIFY = {
    "photo": doc.photo(),
    "bbox": doc.boxes("Faces as [[x1, y1, x2, y2], ...], instead of detecting them"),
    **BOX_CORNERS,
    "threshold": doc.THRESHOLD,
    "n": doc.integer("Matches per face (default 1)"),
    "strict": doc.flag(
        "Fail instead of answering from only some of the shards (default: the gateway's "
        "tntapi_ignore_search_errors setting, which answers from the live ones)"
    ),
    "mf_selector": doc.MF_SELECTOR,
}
ADD_FACE = {
    "photo": doc.photo(),
    "meta": doc.Param("Free text kept with the face, e.g. a name or an id"),
    "galleries": doc.GALLERY_LIST,
    "bbox": doc.boxes("Faces as [[x1, y1, x2, y2], ...], instead of detecting them"),
    "mf_selector": doc.MF_SELECTOR,
    "cam_id": doc.Param(
        "The camera (UUID) the photo comes from", json={"type": "string", "format": "uuid"}
    ),
    "face0": doc.Param(
        "The aligned face chip the video worker made (multipart only)",
        json={"type": "string"},
        part={"type": "string", "format": "binary"},
    ),
    "timestamp": doc.Param("When the photo was taken (ISO 8601)"),
    "detectorParams": doc.Param(
        "The video worker's scores, a JSON object of numbers",
        json={"type": "object", "additionalProperties": {"type": "number"}},
    ),
    **doc.ATTRIBUTES,
}
UPDATE_FACE = {
    "meta": doc.Param("The new meta"),
    "person_id": doc.integer("The person this face belongs to"),
    "galleries": doc.Param(
        'Gallery changes: {"add": [...]}, {"del": [...]} or {"set": [...]}',
        json={
            "type": "object",
            "properties": {
                op: {"type": "array", "items": {"type": "string"}} for op in ("add", "del", "set")
            },
        },
    ),
}

F = TypeVar("F", bound=Callable[..., Any])


class Registrar(Protocol):
    """Registers an endpoint under a path for one method (both slash forms)."""

    def __call__(self, path: str, method: str, **kwargs: Any) -> Callable[[F], F]: ...


def version_of(request: Request) -> str:
    return request.url.path.split("/")[1]


def base_url(request: Request) -> str:
    """Where clients reach the gateway, for the photo URLs in replies (the seed built them from
    its ffupload_url): the public_url setting, else the address the request came to."""
    public_url: str = getattr(request.app.state, "public_url", "")
    return public_url or str(request.base_url).rstrip("/")


def wanted(params: Params, request: Request) -> Wanted:
    """The gender, age and emotions a request asks for: none in v0, nor with the gae setting
    off (the flags are then ignored, as v0 ignores them)."""
    if version_of(request) == "v0" or not getattr(request.app.state, "gae", True):
        return Wanted()
    return Wanted(
        gender=parse_bool(params.get("gender"), "gender"),
        age=parse_bool(params.get("age"), "age"),
        emotions=parse_bool(params.get("emotions"), "emotions"),
    )


def face_body(face: Face, request: Request) -> dict[str, Any]:
    return face.as_dict(version_of(request), base_url(request))


def register(route: Registrar, faces: Faces, fetcher: Fetcher) -> None:
    """Add the face routes through `route(path, method, **kw)`, which registers them on the
    versioned router with and without a trailing slash."""

    @route(
        "/detect",
        "POST",
        summary="Detect faces on a photo",
        openapi_extra=doc.body({"photo": doc.photo(), **doc.ATTRIBUTES}, required=("photo",)),
    )
    async def detect(request: Request) -> dict[str, Any]:
        params = await read_params(request)
        photo = await photo_param(params, "photo", fetcher)
        found, orientation = await faces.analyse(photo, wanted(params, request))
        return {"faces": [_detected(f) for f in found], "orientation": orientation}

    @route(
        "/verify",
        "POST",
        summary="Check whether two photos show the same person",
        openapi_extra=doc.body(VERIFY, required=("photo1", "photo2")),
    )
    async def verify(request: Request) -> dict[str, Any]:
        params = await read_params(request)
        photo1 = await photo_param(params, "photo1", fetcher)
        photo2 = await photo_param(params, "photo2", fetcher)
        raw_threshold = params.get("threshold")
        none = isinstance(raw_threshold, str) and raw_threshold.strip().lower() == "none"
        threshold = None if none else parse_threshold(raw_threshold)
        result = await faces.verify(
            photo1,
            photo2,
            parse_bboxes(params.get("bbox1"), "bbox1"),
            parse_bboxes(params.get("bbox2"), "bbox2"),
            threshold,
            parse_mf_selector(params.get("mf_selector")),
        )
        pairs = []
        for box1, box2, confidence in result.pairs:
            pair: dict[str, Any] = {
                "bbox1": box1.as_dict(),
                "bbox2": box2.as_dict(),
                "confidence": confidence,
            }
            if threshold is not None:
                pair["verified"] = result.verified(confidence)
            pairs.append(pair)
        body: dict[str, Any] = {"results": pairs}
        if threshold is not None:
            body["verified"] = result.all_verified
        return body

    async def identify_in(request: Request, gallery: str) -> Response:
        params = await read_params(request)
        photo = await photo_param(params, "photo", fetcher)
        identified = await faces.identify(
            photo,
            parse_bbox_params(params.values),
            gallery=gallery,
            threshold=parse_threshold(params.get("threshold")),
            n=parse_n(params.get("n")),
            strict=_optional_bool(params.get("strict"), "strict"),
            mf_selector=parse_mf_selector(params.get("mf_selector")),
        )
        results = {
            box.identify_key(): [
                {"confidence": m.confidence, "face": face_body(m.face, request)} for m in matches
            ]
            for box, matches in identified.results
        }
        return JSONResponse(
            {"results": results},
            headers={"X-Live-Servers": f"{identified.live}/{identified.total}"},
        )

    @route(
        "/identify",
        "POST",
        summary="Find the most similar stored faces",
        openapi_extra=doc.body(IDENTIFY, required=("photo",)),
    )
    async def identify(request: Request) -> Response:
        return await identify_in(request, DEFAULT_GALLERY)

    @route(
        "/faces/gallery/{gallery}/identify",
        "POST",
        summary="Identify within one gallery",
        openapi_extra=doc.body(IDENTIFY, required=("photo",)),
    )
    async def identify_gallery(request: Request, gallery: str) -> Response:
        return await identify_in(request, gallery)

    @route(
        "/face",
        "POST",
        summary="Add the faces on a photo to the database",
        openapi_extra=doc.body(ADD_FACE, required=("photo",)),
    )
    async def add_face(request: Request) -> dict[str, Any]:
        params = await read_params(request)
        photo = await photo_param(params, "photo", fetcher)
        chip = params.files.get("face0")
        cam_id = params.get("cam_id")
        added = await faces.add(
            photo,
            meta=parse_meta(params.get("meta")),
            galleries=parse_galleries(params.get("galleries")),
            bboxes=parse_bboxes(params.get("bbox"), "bbox"),
            mf_selector=parse_mf_selector(params.get("mf_selector")),
            wanted=wanted(params, request),
            cam_id=check_cam_id(cam_id) if cam_id else None,
            chip=chip,
            timestamp=parse_time(params.get("timestamp"), "timestamp"),
            detector_params=_detector_params(params.get("detectorParams")),
        )
        return {"results": [face_body(f, request) for f in added]}

    @route("/face/id/{face_id}", "GET", summary="One stored face")
    async def get_face(request: Request, face_id: str) -> dict[str, Any]:
        return face_body(await faces.get(_face_id(face_id)), request)

    @route(
        "/face/id/{face_id}",
        "PUT",
        summary="Change a face's meta, person or galleries",
        openapi_extra=doc.body(UPDATE_FACE),
    )
    async def update_face(request: Request, face_id: str) -> dict[str, Any]:
        params = await read_params(request)
        galleries = params.get("galleries")
        if isinstance(galleries, str):
            galleries = parse_json(galleries, "galleries")
        if galleries is not None and not isinstance(galleries, dict):
            raise BadParam(
                'galleries must be {"add": [...]}, {"del": [...]} or {"set": [...]}',
                param="galleries",
                value=galleries,
            )
        person = params.get("person_id")
        updated = await faces.update(
            _face_id(face_id),
            meta=parse_meta(params.get("meta")) if params.has("meta") else None,
            person_id=None
            if person is None
            else parse_int(person, "person_id", default=0, low=1, high=MAX_ID),
            galleries=galleries,
        )
        return face_body(updated, request)

    @route(
        "/face/id/{face_id}",
        "DELETE",
        status_code=204,
        response_class=Response,
        summary="Delete a face",
    )
    async def delete_face(face_id: str) -> Response:
        await faces.delete(_face_id(face_id))
        return Response(status_code=204)

    async def listing(request: Request, gallery: str | None) -> dict[str, Any]:
        max_id, limit = _page_params(request)
        page = await faces.page(gallery, max_id, limit)
        results = [face_body(f, request) for f in page]
        ids = [f.id for f in page]
        return await _paged(request, results, ids, limit, faces.previous_max_id, gallery)

    @route(
        "/faces",
        "GET",
        summary="All stored faces, newest first, paged by max_id",
        openapi_extra=doc.query(PAGE),
    )
    async def list_faces(request: Request) -> dict[str, Any]:
        return await listing(request, None)

    @route(
        "/faces/gallery/{gallery}",
        "GET",
        summary="The faces of one gallery",
        openapi_extra=doc.query(PAGE),
    )
    async def list_gallery_faces(request: Request, gallery: str) -> dict[str, Any]:
        return await listing(request, gallery)

    @route("/face/meta/{meta:path}", "GET", summary="The faces with this meta")
    async def faces_by_meta(request: Request, meta: str) -> dict[str, Any]:
        found = await faces.by_meta(_meta_in_path(request, meta))
        return {"results": [face_body(f, request) for f in found]}

    @route(
        "/face/gallery/{gallery}/meta/{meta:path}",
        "GET",
        summary="Faces with this meta in a gallery",
    )
    async def gallery_faces_by_meta(request: Request, gallery: str, meta: str) -> dict[str, Any]:
        found = await faces.by_meta(_meta_in_path(request, meta), gallery)
        return {"results": [face_body(f, request) for f in found]}

    async def meta_listing(request: Request, gallery: str | None) -> dict[str, Any]:
        """Paged as /faces is: a meta's place is the id of its first face, newest first."""
        max_id, limit = _page_params(request)
        page = await faces.metas(gallery, max_id, limit)
        results = [
            {"meta": s.meta, "count": s.count, "face": face_body(s.face, request)} for s in page
        ]
        ids = [s.face.id for s in page]
        return await _paged(request, results, ids, limit, faces.previous_meta_max_id, gallery)

    @route(
        "/meta",
        "GET",
        summary="Every meta string, with a count and its first face, paged by max_id",
        openapi_extra=doc.query(PAGE),
    )
    async def list_meta(request: Request) -> dict[str, Any]:
        return await meta_listing(request, None)

    @route(
        "/meta/gallery/{gallery}",
        "GET",
        summary="Meta strings of one gallery",
        openapi_extra=doc.query(PAGE),
    )
    async def list_gallery_meta(request: Request, gallery: str) -> dict[str, Any]:
        return await meta_listing(request, gallery)


def register_persons(route: Registrar, faces: Faces) -> None:
    """Persons and camera history (dynamic person creation, friend or foe)."""

    @route(
        "/persons",
        "GET",
        summary="All persons, newest first, paged by max_id",
        openapi_extra=doc.query(PAGE),
    )
    async def list_persons(request: Request) -> dict[str, Any]:
        max_id, limit = _page_params(request)
        found = await faces.persons(max_id, limit)
        body: dict[str, Any] = {"results": [{"id": p.id, "meta": p.meta} for p in found]}
        if len(found) == limit:
            body["next_page"] = f"{request.url.path}?max_id={found[-1].id}&limit={limit}"
        return body

    @route("/person/id/{person_id}", "GET", summary="A person and their faces")
    async def get_person(request: Request, person_id: str) -> dict[str, Any]:
        person, person_faces = await faces.person(_face_id(person_id, "person_id"))
        return {
            "id": person.id,
            "meta": person.meta,
            "faces": [face_body(f, request) for f in person_faces],
        }

    @route(
        "/person/history/id/{person_id}",
        "GET",
        summary="A person's camera history",
        openapi_extra=doc.query(doc.HISTORY),
    )
    async def person_history(request: Request, person_id: str) -> dict[str, Any]:
        params = await read_params(request)
        query = _history_query(params, person_id=_face_id(person_id, "person_id"))
        events = await faces.history(query)
        return {
            "results": [
                {
                    "person_id": e.person_id,
                    "face_id": e.face_id,
                    "cam_id": e.cam_id,
                    "meta": e.meta,
                    "screenshot": media_url(e.screenshot, base_url(request)),
                    "timestamp": iso_time(e.timestamp),
                }
                for e in events
            ]
        }

    @route(
        "/history/search",
        "POST",
        summary="Camera history events, newest first",
        openapi_extra=doc.body(
            {"person_id": doc.integer("Only this person's events"), **doc.HISTORY}
        ),
    )
    async def search_history(request: Request) -> dict[str, Any]:
        params = await read_params(request)
        person = params.get("person_id")
        query = _history_query(
            params,
            person_id=None if person in (None, "") else _face_id(str(person), "person_id"),
        )
        events = await faces.history(query)
        body: dict[str, Any] = {
            "results": [
                {
                    # The event's own id, which next_page's max_id pages by, as the seed's.
                    "id": e.id,
                    "face_id": e.face_id,
                    "person_id": e.person_id,
                    "cam_id": e.cam_id,
                    "friend": e.friend,
                    "meta": e.meta,
                    "photo": media_url(e.photo, base_url(request)),
                    "photo_hash": e.photo_hash,
                    "screenshot": media_url(e.screenshot, base_url(request)),
                    "timestamp": iso_time(e.timestamp),
                    **e.bbox.as_dict(),
                }
                for e in events
            ]
        }
        if query.limit and len(events) == query.limit:
            body["next_page"] = f"{request.url.path}?max_id={events[-1].id}"
        return body


def _history_query(params: Params, person_id: int | None) -> HistoryQuery:
    friend = params.get("friend")
    return HistoryQuery(
        person_id=person_id,
        cam_ids=parse_cam_ids(params.get("cam_ids")),
        start=parse_time(params.get("start"), "start"),
        end=parse_time(params.get("end"), "end"),
        friend=None if friend in (None, "") else parse_bool(friend, "friend"),
        limit=parse_int(params.get("limit"), "limit", default=0, low=0, high=10_000),
        max_id=parse_int(params.get("max_id"), "max_id", default=MAX_ID, low=1, high=MAX_ID),
    )


def register_media(app: FastAPI, media: MediaStore) -> None:
    """Stored photos and faces, public like the seed's upload URLs (no token: <img> tags)."""

    @app.get("/media/{name}", include_in_schema=False)
    async def get_media(name: str) -> Response:
        found = await media.get(name)
        if found is None:
            raise NotFound(f"no media named {name!r}")
        data, content_type = found
        return Response(
            data,
            media_type=content_type,
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )


def _detected(face: Detection | Extraction) -> dict[str, Any]:
    body: dict[str, Any] = face.bbox.as_dict()
    if isinstance(face, Extraction) and face.attributes is not None:
        body.update(face.attributes.as_dict())
    return body


def _page_params(request: Request) -> tuple[int, int]:
    """(max_id, limit) of a paged listing's query."""
    params = Params(values=dict(request.query_params))
    limit = parse_int(params.get("limit"), "limit", default=PAGE_SIZE, low=1, high=1000)
    max_id = parse_int(params.get("max_id"), "max_id", default=MAX_ID, low=1, high=MAX_ID)
    return max_id, limit


async def _paged(
    request: Request,
    results: list[dict[str, Any]],
    ids: list[int],
    limit: int,
    previous_max_id: Callable[[str | None, int, int], Awaitable[int | None]],
    gallery: str | None,
) -> dict[str, Any]:
    """A page of a listing newest first by id, with its links; both are always there, null at
    either end, as in the seed's examples."""
    path = request.url.path
    body: dict[str, Any] = {"next_page": None, "prev_page": None, "results": results}
    if len(ids) == limit:
        body["next_page"] = f"{path}?max_id={ids[-1]}&limit={limit}"
    if ids:
        previous = await previous_max_id(gallery, ids[0], limit)
        if previous is not None:
            body["prev_page"] = f"{path}?max_id={previous}&limit={limit}"
    return body


def _optional_bool(value: Any, param: str) -> bool | None:
    """A true/false parameter, or None when the request leaves it out."""
    return None if value is None or value == "" else parse_bool(value, param)


def _meta_in_path(request: Request, meta: str) -> str:
    """The meta of /face/meta/<meta>, which may hold slashes (mass-enroll's --meta-filename
    makes file paths metas): the server has decoded %2F already, so the route takes the rest of
    the path, and a final slash is the route's optional one only where it came unencoded."""
    raw_path = bytes(request.scope.get("raw_path") or b"").split(b"?", 1)[0]
    if meta.endswith("/") and raw_path.endswith(b"/"):
        meta = meta[:-1]
    if not meta:
        # Not every face without a meta: /faces lists those, page by page.
        raise BadParam("the meta is empty", param="meta", value=meta)
    return meta


def _face_id(raw: str, param: str = "id") -> int:
    try:
        value = int(raw)
    except ValueError:
        raise BadParam(f"{param} must be a positive integer", param=param, value=raw) from None
    if not 0 < value <= MAX_ID:
        raise BadParam(f"{param} must be a positive integer", param=param, value=raw)
    return value


def _detector_params(value: Any) -> dict[str, object] | None:
    """What the video worker says of its snapshot: {"score": ..., "direction_score": ...}."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = parse_json(value, "detectorParams")
    if not isinstance(value, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
    ):
        raise BadParam(
            "detectorParams must be a JSON object of numbers", param="detectorParams", value=value
        )
    return value
