"""Request parameters the way the seed's API takes them: JSON, form-urlencoded, multipart or the
query string, merged into one mapping (the body wins over the query string); photos as uploads
or URLs."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from facegrid.fetch import FetchError
from facegrid.gateway.core.errors import BadParam, MalformedJson, ServiceUnavailable
from facegrid.gateway.core.faces import MAX_PHOTO_BYTES, Photo, PhotoTooLarge

Fetcher = Callable[[str], Awaitable[bytes]]

# Plain (non-file) multipart fields larger than this are refused; photos go as file parts.
MAX_FIELD_BYTES = 1024 * 1024


@dataclass
class Params:
    values: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.values or name in self.files


async def read_params(request: Request) -> Params:
    params = Params(values=dict(request.query_params))
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_part_size=MAX_FIELD_BYTES)
        except Exception as e:  # starlette raises its own and multipart's errors
            raise BadParam(f"the form cannot be read: {e}", param="body") from e
        try:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read(MAX_PHOTO_BYTES + 1)
                    if len(data) > MAX_PHOTO_BYTES:
                        raise PhotoTooLarge(
                            f"{name} is larger than {MAX_PHOTO_BYTES} bytes",
                            param=name,
                            value=None,
                        )
                    params.files[name] = data
                else:
                    params.values[name] = value
        finally:
            await form.close()
        return params
    body = await request.body()
    if not body.strip():
        return params
    if content_type not in ("application/json", "") and not content_type.endswith("+json"):
        raise BadParam(
            f"send parameters as JSON, a form or the query string, not {content_type}",
            param="Content-Type",
            value=content_type,
        )
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedJson(f"the body is not valid JSON: {e}") from e
    if not isinstance(parsed, dict):
        raise MalformedJson("the body must be a JSON object")
    params.values.update(parsed)
    return params


async def photo_param(params: Params, name: str, fetcher: Fetcher, required: bool = True) -> Photo:
    """An uploaded photo, or one fetched from the URL given in the parameter."""
    if name in params.files:
        return Photo(params.files[name], param=name)
    value = params.get(name)
    if value is None or value == "":
        if not required:
            return Photo(b"", param=name)
        raise BadParam(f"{name} is required: an upload or a URL", param=name, value=None)
    if not isinstance(value, str):
        raise BadParam(f"{name} must be an upload or a URL", param=name, value=value)
    try:
        data = await fetcher(value)
    except FetchError as e:
        if e.too_large:
            raise PhotoTooLarge(e.reason, param=name, value=value) from e
        if e.refused:
            raise BadParam(e.reason, param=name, value=value) from e
        raise BadParam(e.reason, param=name, value=value) from e
    except OSError as e:
        raise ServiceUnavailable(f"cannot fetch {value}: {e}") from e
    return Photo(data, url=value, param=name)
