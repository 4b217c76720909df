"""What the REST API talks about: boxes, faces and the parameters that choose among them.

Parsing here turns a client's loosely typed values (JSON, form fields and query strings all
arrive here) into checked values, or a BAD_PARAM naming the parameter and the value.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from facegrid import confidence
from facegrid.gateway.core.errors import BadParam

DEFAULT_GALLERY = "default"
MF_SELECTORS = ("reject", "biggest", "all")
MAX_META = 4096
MAX_N = 1000


# No photo is wider or taller than its 50-megapixel limit allows; beyond this a coordinate is
# a client's mistake (and would not fit the wire format's 32-bit integers).
MAX_COORDINATE = 1_000_000


@dataclass(frozen=True)
class BBox:
    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def area(self) -> int:
        return max(0, self.x2 - self.x1) * max(0, self.y2 - self.y1)

    def as_dict(self) -> dict[str, int]:
        return {"x1": self.x1, "x2": self.x2, "y1": self.y1, "y2": self.y2}

    def identify_key(self) -> str:
        """The key the seed's /identify results use for this box: `[x1, y1, x2, y2]`."""
        return f"[{self.x1}, {self.y1}, {self.x2}, {self.y2}]"

    @classmethod
    def parse(cls, value: Any, param: str) -> BBox:
        """A box as a {x1, y1, x2, y2} dictionary or an [x1, y1, x2, y2] array (or JSON text)."""
        if isinstance(value, str):
            value = parse_json(value, param)
        if isinstance(value, dict):
            try:
                coords = [value[k] for k in ("x1", "y1", "x2", "y2")]
            except KeyError as e:
                raise BadParam(f"{param} lacks {e.args[0]}", param=param, value=value) from None
        elif isinstance(value, list | tuple) and len(value) == 4:
            coords = list(value)
        else:
            raise BadParam(
                f"{param} must be {{x1, y1, x2, y2}} or [x1, y1, x2, y2]", param=param, value=value
            )
        numbers = []
        for c in coords:
            if isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(c):
                raise BadParam(f"{param} coordinates must be numbers", param=param, value=value)
            if abs(c) > MAX_COORDINATE:
                raise BadParam(
                    f"{param} coordinates must lie within +-{MAX_COORDINATE} pixels",
                    param=param,
                    value=value,
                )
            numbers.append(round(c))
        box = cls(*numbers)
        if box.x2 <= box.x1 or box.y2 <= box.y1:
            raise BadParam(f"{param} must have x2 > x1 and y2 > y1", param=param, value=value)
        return box


def parse_bboxes(value: Any, param: str) -> list[BBox] | None:
    """An array of boxes; a single box is taken as an array of one."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = parse_json(value, param)
    if isinstance(value, dict) or (
        isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)
    ):
        return [BBox.parse(value, param)]
    if not isinstance(value, list) or not value:
        raise BadParam(f"{param} must be an array of boxes", param=param, value=value)
    return [BBox.parse(v, param) for v in value]


def parse_bbox_params(values: Mapping[str, Any]) -> list[BBox] | None:
    """/identify's box: `x1`, `y1`, `x2`, `y2` fields, or a `bbox` as elsewhere."""
    corners = [values.get(k) for k in ("x1", "y1", "x2", "y2")]
    if all(c is None or c == "" for c in corners):
        return parse_bboxes(values.get("bbox"), "bbox")
    numbers = []
    for name, c in zip(("x1", "y1", "x2", "y2"), corners, strict=True):
        try:
            numbers.append(float(c))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise BadParam(f"{name} must be a number", param=name, value=c) from None
    return [BBox.parse(numbers, "bbox")]


def parse_mf_selector(value: Any) -> str:
    if value is None or value == "":
        return "biggest"
    if value not in MF_SELECTORS:
        raise BadParam(
            f"mf_selector must be one of {', '.join(MF_SELECTORS)}",
            param="mf_selector",
            value=value,
        )
    return str(value)


def parse_threshold(value: Any) -> float:
    try:
        return confidence.threshold(value)
    except (ValueError, TypeError) as e:
        raise BadParam(str(e), param="threshold", value=value) from None


def parse_n(value: Any) -> int:
    return parse_int(value, "n", default=1, low=1, high=MAX_N)


def parse_int(value: Any, param: str, *, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadParam(f"{param} must be an integer", param=param, value=value) from None
    if isinstance(value, float) and not value.is_integer():
        raise BadParam(f"{param} must be an integer", param=param, value=value)
    if not low <= number <= high:
        raise BadParam(f"{param} must be within {low}..{high}", param=param, value=value)
    return number


def parse_bool(value: Any, param: str, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise BadParam(f"{param} must be true or false", param=param, value=value)


def parse_meta(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadParam("meta must be a string", param="meta", value=value)
    if len(value) > MAX_META:
        raise BadParam(f"meta is longer than {MAX_META} characters", param="meta", value=value)
    return value


def parse_galleries(value: Any) -> list[str]:
    """Gallery names (an array, JSON text, or comma-separated), always with `default` first."""
    if value is None or value == "":
        names: list[Any] = []
    elif isinstance(value, str):
        stripped = value.strip()
        names = (
            parse_json(stripped, "galleries") if stripped.startswith("[") else stripped.split(",")
        )
    elif isinstance(value, list):
        names = value
    else:
        raise BadParam("galleries must be an array of names", param="galleries", value=value)
    result = [DEFAULT_GALLERY]
    for name in names:
        if not isinstance(name, str):
            raise BadParam("gallery names must be strings", param="galleries", value=value)
        if name.strip() and name.strip() not in result:
            result.append(name.strip())
    return result


def parse_json(text: str, param: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise BadParam(f"{param} is not valid JSON", param=param, value=text) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# An emotion is listed when at least this likely; the likeliest is always listed.
EMOTION_SHOWN = 0.1


@dataclass(frozen=True)
class Attributes:
    """Gender, age and emotions (asked for through API v1), as far as they were asked for."""

    gender: str | None = None
    gender_confidence: float = 0.0
    age: float | None = None
    # Every emotion with its probability, likeliest first.
    emotions: tuple[tuple[str, float], ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The seed's shape: `"gender": "female"`, `"age": 26`, `"emotions": ["neutral",
        "sad"]` (the likely ones, likeliest first)."""
        body: dict[str, Any] = {}
        if self.gender is not None:
            body["gender"] = self.gender
        if self.age is not None:
            body["age"] = round(self.age)
        if self.emotions is not None:
            body["emotions"] = [
                e for i, (e, p) in enumerate(self.emotions) if i == 0 or p >= EMOTION_SHOWN
            ]
        return body


@dataclass(frozen=True)
class Face:
    """A stored face, as the API shows it."""

    id: int
    bbox: BBox
    meta: str
    galleries: tuple[str, ...]
    photo: str
    photo_hash: str
    timestamp: dt.datetime
    thumbnail: str = ""
    normalized: str = ""
    person_id: int | None = None
    cam_id: str | None = None
    attributes: Attributes | None = None
    # Which model made the stored vector (a later migration must know).
    model: str = ""
    # The gateway's own galleries the vector is also in (person identification); not shown.
    hidden_galleries: tuple[str, ...] = ()
    # Friend-or-foe verdict when the face was posted from a camera with persons on.
    friend: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def index_galleries(self) -> list[str]:
        return [*self.galleries, *self.hidden_galleries]

    def as_dict(self, version: str, base_url: str = "") -> dict[str, Any]:
        """The API's face object; stored media paths become URLs under base_url."""
        body: dict[str, Any] = {
            "id": self.id,
            "meta": self.meta,
            "galleries": list(self.galleries),
            "photo": media_url(self.photo, base_url),
            "photo_hash": self.photo_hash,
            "thumbnail": media_url(self.thumbnail, base_url),
            "timestamp": iso_time(self.timestamp),
            **self.bbox.as_dict(),
        }
        if self.normalized:
            body["normalized"] = media_url(self.normalized, base_url)
        if self.person_id is not None:
            body["person_id"] = self.person_id
        if self.cam_id is not None:
            body["cam_id"] = self.cam_id
        if self.friend is not None:
            body["friend"] = self.friend
        # v0 cannot ask for gender, age and emotions, but shows those a face was stored with
        # (the seed's v0 /identify and /faces examples list them).
        if self.attributes is not None:
            body.update(self.attributes.as_dict())
        return body

    def with_changes(self, **changes: Any) -> Face:
        return replace(self, **changes)


def media_url(path: str, base_url: str) -> str:
    """A stored media path ("/media/...") as a URL under base_url; other URLs as they are."""
    return f"{base_url.rstrip('/')}{path}" if path.startswith("/") else path


def iso_time(when: dt.datetime) -> str:
    """A time as the seed's API shows it: ISO 8601, microseconds, no zone."""
    return when.replace(tzinfo=None).isoformat(timespec="microseconds")
