"""The contract's error shape: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import orjson
from starlette.responses import Response


def error_body(code: str, message: str) -> bytes:
    """The contract's error document: ``{"error": {"code": ..., "message": ...}}``."""
    return orjson.dumps({"error": {"code": code, "message": message}})


def json_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """An error response in the contract's shape."""
    return Response(
        error_body(code, message), status, headers=headers, media_type="application/json"
    )
