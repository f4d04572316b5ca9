"""The error answers each route documents in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from learnfeed.gateway import models

AUTHED = (401, 429, 503, 504)
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    503: "unavailable",
    504: "deadline_exceeded",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": models.ErrorBody, "description": _STATUS_CODES.get(code, "error")}
        for code in codes
    }


def status_code_name(status: int) -> str:
    return _STATUS_CODES.get(status, "error")
