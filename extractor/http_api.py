"""The seed's Extraction API over HTTP: `POST /` with `{"requests": [...]}`, a thin adapter.

Accepts the JSON body alone or multipart/form-data with the JSON in a part named `request` and
photos in other parts (`"image": "multipart:NAME"`); `"image"` may also be an http(s) URL,
fetched directly (no redirects, at most the fetch_size_limit setting, 10 MB by default) when
fetching is enabled. Each request says which `detector` to use (`nnd` or `legacy`: detect
faces; `prenormalized`: the image is an aligned face chip), an optional `roi`, `need_facen` /
`need_gender` / `need_age` / `need_emotions` / `need_normalized` and `auto_rotate`; faces
larger than the max_face_size setting are left out (requests cannot set their own). The
reply is `{"responses": [...]}`, one per request, each with `faces` or an `error` of `code` and
`desc`; one bad request never fails its neighbours.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from facegrid.extractor.core.extraction import (
    AnalysedFace,
    Analysis,
    AnalysisRequest,
    BatchError,
    Extraction,
    Wanted,
)
from facegrid.fetch import FetchError, FetchPolicy
from facegrid.fetch import fetch as fetch_url
from facegrid.images import MAX_BYTES
from facegrid.licence import LicenceClient, LicenceRefused

DETECTORS = ("nnd", "legacy", "prenormalized")
FETCH_TIMEOUT = 10.0


@dataclass(frozen=True)
class HttpOptions:
    quality_estimator: bool = False
    fetch_enabled: bool = True
    # Public, direct URLs only unless the policy allows networks (see facegrid.fetch).
    fetch_policy: FetchPolicy = field(default_factory=lambda: FetchPolicy(timeout=FETCH_TIMEOUT))
    # The licence: no work without a valid one; gender, age and emotions only when it has them.
    licence: LicenceClient = field(default_factory=lambda: LicenceClient(None, "extractor", ""))


class RequestError(ValueError):
    def __init__(self, code: str, desc: str) -> None:
        super().__init__(desc)
        self.code = code
        self.desc = desc


def _error(code: str, desc: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"code": code, "desc": desc}, status_code=status)


def _flag(spec: dict[str, Any], name: str) -> bool:
    value = spec.get(name, False)
    if not isinstance(value, bool):
        raise RequestError("BAD_PARAM", f"{name} must be true or false")
    return value


def _roi(spec: dict[str, Any]) -> tuple[int, int, int, int] | None:
    roi = spec.get("roi")
    if roi is None:
        return None
    try:
        box = (int(roi["left"]), int(roi["top"]), int(roi["right"]), int(roi["bottom"]))
    except (TypeError, KeyError, ValueError) as e:
        raise RequestError("BAD_PARAM", "roi must be {left, top, right, bottom} integers") from e
    if box[2] <= box[0] or box[3] <= box[1]:
        raise RequestError("BAD_PARAM", "roi must have right > left and bottom > top")
    return box


def _face(face: AnalysedFace, wanted: Wanted, options: HttpOptions) -> dict[str, Any]:
    left, top, right, bottom = face.box
    out: dict[str, Any] = {
        "bbox": {"left": left, "top": top, "right": right, "bottom": bottom},
        "detection_score": face.quality if options.quality_estimator else face.score,
    }
    if wanted.facen and face.facen is not None:
        out["facen"] = base64.b64encode(face.facen.astype("<f4").tobytes()).decode()
    a = face.attributes
    if a is not None:
        if wanted.gender and a.gender is not None:
            out["gender"] = {"gender": a.gender.upper(), "score": a.gender_confidence}
        if wanted.age and a.age is not None:
            out["age"] = a.age
        if wanted.emotions and a.emotions is not None:
            out["emotions"] = [{"emotion": e, "score": s} for e, s in a.emotions]
    if wanted.normalized and face.normalized:
        out["normalized"] = base64.b64encode(face.normalized).decode()
    return out


def create_app(
    extraction: Callable[[], Extraction | None],
    options: HttpOptions,
    fetcher: Callable[[str], Awaitable[bytes]] | None = None,
) -> Starlette:
    """The Extraction API; `extraction()` is None while no models are loaded."""

    async def fetch(url: str) -> bytes:
        if not options.fetch_enabled:
            raise RequestError("BAD_PARAM", "fetching images by URL is disabled")
        try:
            return await fetch_url(url, options.fetch_policy)
        except FetchError as e:
            code = "IMAGE_TOO_LARGE" if e.too_large else "IMAGE_FETCH_FAILED"
            raise RequestError(code, e.reason) from e

    get = fetcher or fetch

    async def image_of(spec: dict[str, Any], parts: dict[str, bytes]) -> bytes:
        image = spec.get("image")
        if not isinstance(image, str) or not image:
            raise RequestError("BAD_PARAM", "image is required: multipart:NAME or an http(s) URL")
        if image.startswith("multipart:"):
            name = image.removeprefix("multipart:")
            if name not in parts:
                raise RequestError("BAD_PARAM", f"no body part named {name!r}")
            return parts[name]
        if image.startswith(("http://", "https://")):
            return await get(image)
        raise RequestError("BAD_PARAM", "image must be multipart:NAME or an http(s) URL")

    async def endpoint(request: Request) -> JSONResponse:
        current = extraction()
        if current is None:
            return _error("SERVICE_UNAVAILABLE", "no models are loaded", 503)
        try:
            options.licence.check()
        except LicenceRefused as e:
            return _error("LICENSE_ERROR", str(e), 403)
        parts: dict[str, bytes] = {}
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            async with request.form(max_part_size=MAX_BYTES + 1) as form:
                raw: Any = form.get("request")
                for key, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        parts[key] = await value.read()
                if isinstance(raw, UploadFile):
                    raw = (await raw.read()).decode(errors="replace")
        else:
            raw = (await request.body()).decode(errors="replace")
        try:
            body = json.loads(raw) if isinstance(raw, str) else None
        except ValueError as e:
            return _error("MALFORMED_JSON", f"the request is not valid JSON: {e}")
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            return _error("BAD_PARAM", 'the body must be {"requests": [...]}')

        responses: list[dict[str, Any] | None] = [None] * len(body["requests"])
        accepted: list[tuple[int, AnalysisRequest, Wanted]] = []
        for i, spec in enumerate(body["requests"]):
            try:
                if not isinstance(spec, dict):
                    raise RequestError("BAD_PARAM", "each request must be an object")
                detector = spec.get("detector", "nnd")
                if detector not in DETECTORS:
                    raise RequestError("BAD_PARAM", f"detector must be one of {DETECTORS}")
                wanted = Wanted(
                    facen=_flag(spec, "need_facen"),
                    gender=_flag(spec, "need_gender"),
                    age=_flag(spec, "need_age"),
                    emotions=_flag(spec, "need_emotions"),
                    normalized=_flag(spec, "need_normalized"),
                )
                for feature in ("gender", "age", "emotions"):
                    if getattr(wanted, feature) and not options.licence.has(feature):
                        raise RequestError(
                            "LICENSE_ERROR", f"the licence does not include {feature}"
                        )
                analysis = AnalysisRequest(
                    await image_of(spec, parts),
                    _roi(spec),
                    detector == "prenormalized",
                    _flag(spec, "auto_rotate"),
                )
            except RequestError as e:
                responses[i] = {"faces": [], "error": {"code": e.code, "desc": e.desc}}
                continue
            accepted.append((i, analysis, wanted))

        if accepted:
            # One model run for all requests; the union of what they need, trimmed per reply.
            union = Wanted(
                *(
                    any(getattr(w, f) for _, _, w in accepted)
                    for f in ("facen", "gender", "age", "emotions", "normalized")
                )
            )
            try:
                results: list[Analysis] = await asyncio.to_thread(
                    current.analyse, [a for _, a, _ in accepted], union
                )
            except BatchError as e:
                return _error("BAD_PARAM", str(e))
            for (i, _, wanted), result in zip(accepted, results, strict=True):
                if result.error is not None:
                    responses[i] = {
                        "faces": [],
                        "error": {"code": result.error.code, "desc": result.error.reason},
                    }
                else:
                    responses[i] = {"faces": [_face(f, wanted, options) for f in result.faces]}
        return JSONResponse({"responses": responses})

    return Starlette(routes=[Route("/", endpoint, methods=["POST"])])
