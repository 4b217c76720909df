"""What each endpoint takes and answers, for the OpenAPI document.

Handlers read their parameters with `read_params` (JSON, form-urlencoded, multipart or the query
string alike), so FastAPI cannot infer them from signatures. This module describes them instead:
`body(...)` documents a JSON and a multipart request body with the same fields (a photo is a URL
in JSON and a file or a URL in multipart), `query(...)` documents query-string parameters. Every
operation also documents the error body. The interactive docs and the API fuzzer read these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Schema = dict[str, Any]

_STRING: Schema = {"type": "string"}
_FLAG: Schema = {"oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}]}
_BOX_LIST: Schema = {
    "type": "array",
    "items": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4},
}


@dataclass(frozen=True)
class Param:
    description: str
    # The value's schema in a JSON body or the query string.
    json: Schema = field(default_factory=lambda: dict(_STRING))
    # Its schema as a multipart part, where it differs (files; JSON-encoded lists).
    part: Schema | None = None


def photo(what: str = "The photo") -> Param:
    return Param(
        f"{what}: a public http(s) URL, or a JPEG, PNG or WebP file of at most 10 MB",
        json={"type": "string", "format": "uri"},
        part={"type": "string", "format": "binary"},
    )


def flag(description: str) -> Param:
    return Param(description, json=_FLAG, part={"type": "string", "enum": ["true", "false"]})


def integer(description: str, low: int = 1, high: int = (1 << 63) - 1) -> Param:
    return Param(description, json={"type": "integer", "minimum": low, "maximum": high})


def boxes(description: str) -> Param:
    return Param(description, json=_BOX_LIST, part=_STRING)


THRESHOLD = Param(
    "Confidence threshold: a number from 0 to 1, or a preset: strict, medium, low",
    json={
        "oneOf": [
            {"type": "number", "minimum": 0, "maximum": 1},
            {"type": "string", "enum": ["strict", "medium", "low"]},
        ]
    },
)
MF_SELECTOR = Param(
    "With several faces on the photo: `all` of them, the `biggest`, or `reject` the photo",
    json={"type": "string", "enum": ["all", "biggest", "reject"]},
)
ATTRIBUTES = {
    "gender": flag("Also estimate gender (v1)"),
    "age": flag("Also estimate age (v1)"),
    "emotions": flag("Also estimate emotions (v1)"),
}
MAX_ID = integer("Return items with ids below this one (paging)")
LIMIT = integer("At most this many items", high=1000)
HISTORY = {
    "cam_ids": Param(
        "Only events from these cameras (UUIDs)",
        json={"type": "array", "items": {"type": "string", "format": "uuid"}},
        part=_STRING,
    ),
    "start": Param("Events at or after this ISO 8601 time", json={"type": "string"}),
    "end": Param("Events before this ISO 8601 time", json={"type": "string"}),
    "friend": flag("Only friends (true) or only strangers (false)"),
    "limit": integer("At most this many events", low=0, high=10_000),
    "max_id": MAX_ID,
}
GALLERY_LIST = Param(
    "Galleries to add the face to (besides `default`)",
    json={"type": "array", "items": {"type": "string"}},
    part=_STRING,
)
CAMERA = {
    "url": Param("The stream's URL (rtsp://, http://, file@FPS:PATH, /dev/videoN)"),
    "detector": Param("The video worker pool that processes this camera"),
    "meta": Param("Free text kept with the camera"),
    "active": flag("Whether video workers process the camera"),
    "rot": Param("Rotation region WxH+X+Y, applied before detection"),
    "roi": Param("Region of interest WxH+X+Y: faces are looked for only there"),
}
FILTERS = {
    "cam_ids": HISTORY["cam_ids"],
    "person_ids": Param(
        "Only events of these persons",
        json={"type": "array", "items": {"type": "integer"}},
        part=_STRING,
    ),
    "friend": HISTORY["friend"],
}

ERROR: Schema = {
    "type": "object",
    "required": ["code", "reason"],
    "properties": {
        "code": {
            "type": "string",
            "description": "BAD_PARAM, MALFORMED_JSON, AUTH_FAILED, NOT_FOUND, "
            "SERVICE_UNAVAILABLE, ...",
        },
        "reason": {"type": "string"},
        "param": {"type": "string", "description": "The parameter at fault (BAD_PARAM)"},
        "value": {"description": "Its value, when it can be shown"},
    },
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": why, "content": {"application/json": {"schema": ERROR}}}
    for status, why in (
        (400, "A parameter is missing or wrong (BAD_PARAM), or the JSON is malformed"),
        (401, "No valid `Authorization: Token ...` header (AUTH_FAILED)"),
        (404, "No such item"),
        (413, "The photo is larger than 10 MB"),
        (415, "The photo is not a JPEG, PNG or WebP image"),
        (503, "A component the request needs is down (SERVICE_UNAVAILABLE)"),
    )
}


def _object(params: dict[str, Param], required: tuple[str, ...], part: bool) -> Schema:
    properties = {
        name: {
            **(p.part if part and p.part is not None else p.json),
            "description": p.description,
        }
        for name, p in params.items()
    }
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def body(params: dict[str, Param], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """`openapi_extra` for an operation whose parameters come in the request body."""
    return {
        "requestBody": {
            "required": bool(required),
            "content": {
                "application/json": {"schema": _object(params, required, part=False)},
                "multipart/form-data": {"schema": _object(params, required, part=True)},
            },
        }
    }


def query(params: dict[str, Param]) -> dict[str, Any]:
    """`openapi_extra` for an operation whose parameters come in the query string."""
    return {
        "parameters": [
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": p.description,
                "schema": p.json,
            }
            for name, p in params.items()
        ]
    }
