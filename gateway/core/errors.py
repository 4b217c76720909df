"""The REST API's errors, in the FindFace format: a JSON body with `code` and `reason`.

Every failure the gateway reports is one of these, mapped to its HTTP status here once.
`BAD_PARAM` names the parameter and the value that caused it.
"""

from __future__ import annotations

import math
from typing import Any


class ApiError(Exception):
    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, reason: str, *, param: str | None = None, value: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.param = param
        self.value = value

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "reason": self.reason}
        if self.param is not None:
            body["param"] = self.param
            body["value"] = _json_safe(self.value)
        return body


def _json_safe(value: Any) -> Any:
    """The offending value as strict JSON can carry it: NaN and infinities (which a client
    can send as bare `Infinity`) and other non-JSON values become text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


class AuthFailed(ApiError):
    status = 401
    code = "AUTH_FAILED"


class BadParam(ApiError):
    status = 400
    code = "BAD_PARAM"


class MalformedJson(ApiError):
    status = 400
    code = "MALFORMED_JSON"


class NotFound(ApiError):
    status = 404
    code = "NOT_FOUND"


class MethodNotAllowed(ApiError):
    status = 405
    code = "METHOD_NOT_ALLOWED"


class AlreadyExists(ApiError):
    status = 409
    code = "ALREADY_EXISTS"


class Forbidden(ApiError):
    """Well formed, but refused: deleting the default gallery, going over a licence limit."""

    status = 403
    code = "FORBIDDEN"


class LicenceError(ApiError):
    """The licence does not allow this: a limit reached, a feature left out, or no valid
    licence (the reason says which)."""

    status = 403
    code = "LICENSE_ERROR"


class ServiceUnavailable(ApiError):
    status = 503
    code = "SERVICE_UNAVAILABLE"
