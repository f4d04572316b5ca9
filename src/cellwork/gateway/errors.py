"""The edge's errors: every answer that is not a success is a row of ``cellwork.errors``.

``install_error_handlers(app)`` makes a Starlette or FastAPI app answer, in the
contract's shape ``{"error": {"code": ..., "message": ...}}``:

    CellworkError                its status and public code; ``Retry-After`` when it
                                 carries ``retry_after``, ``WWW-Authenticate: Bearer``
                                 on 401
    HTTPException (Starlette)    the table's class for its status (404 for an unknown
                                 route, 405 keeping its ``Allow`` header)
    RequestValidationError       400 malformed_json for a body that is not JSON, else
      (FastAPI)                  422 validation_failed naming the first bad field
    anything else                500 internal, logged once (``http.unhandled_error``);
                                 a socket route's errors close the socket instead

``error_responses(*classes)`` documents the same answers in FastAPI's OpenAPI
document, from the classes a route can raise, so the document and the answers come
from one table.

FastAPI is the application's choice, not the platform's: it is imported only when the
application has loaded it already, and a Starlette app (push) never pays for it.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import orjson
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from cellwork.errors import (
    PUBLIC_ERRORS,
    CellworkError,
    Internal,
    MalformedJson,
    ValidationFailed,
    error_for_http_status,
)
from cellwork.observability.logging import get_logger
from cellwork.rpc.context import current_call

_log = get_logger("cellwork.gateway.errors")

# WebSocket close codes (RFC 6455 section 7.4.1) for errors raised in a socket route.
_POLICY_VIOLATION = 1008
_INTERNAL_ERROR = 1011
_TRY_AGAIN_LATER = 1013


class ErrorDetail(BaseModel):
    """What went wrong: a public code of ``cellwork.errors`` and a sentence."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """The contract's error document, for OpenAPI: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


def error_body(code: str, message: str) -> bytes:
    """The contract's error document: ``{"error": {"code": ..., "message": ...}}``."""
    return orjson.dumps({"error": {"code": code, "message": message}})


def json_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """An error response in the contract's shape. Prefer ``error_response``, which takes
    status and code from the error table."""
    return Response(
        error_body(code, message), status, headers=headers, media_type="application/json"
    )


def error_response(error: CellworkError, headers: Mapping[str, str] | None = None) -> Response:
    """The edge's answer to ``error``: its HTTP status and public code, ``Retry-After``
    (whole seconds, rounded up, at least 1) when it carries ``retry_after``, and
    ``WWW-Authenticate: Bearer`` on 401. ``headers`` are added (``Allow`` on a 405)."""
    extra = dict(headers or {})
    if error.retry_after is not None:
        extra["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    if error.http_status == 401:
        extra.setdefault("WWW-Authenticate", "Bearer")
    return json_error(error.http_status, error.error_code, error.message, extra)


def error_responses(*classes: type[CellworkError]) -> dict[int | str, dict[str, Any]]:
    """FastAPI's ``responses=`` for a route that can raise ``classes``: each of their HTTP
    statuses with the error schema and a description naming the public codes.

    ``@app.get("/v1/me", responses=error_responses(Unauthenticated, NotFound))``;
    merge other entries in as a dict (``{**error_responses(...), 304: {...}}``).
    """
    codes: dict[int, list[str]] = {}
    for cls in sorted(classes, key=_table_order):
        named = codes.setdefault(cls.http_status, [])
        if cls.error_code not in named:
            named.append(cls.error_code)
    return {
        status: {"model": ErrorBody, "description": ", ".join(f"`{c}`" for c in names)}
        for status, names in sorted(codes.items())
    }


def _table_order(cls: type[CellworkError]) -> int:
    for index, row in enumerate(PUBLIC_ERRORS):
        if issubclass(cls, row) and cls.error_code == row.error_code:
            return index
    return len(PUBLIC_ERRORS)


def _close_code(error: CellworkError) -> int:
    if error.http_status in (429, 503):
        return _TRY_AGAIN_LATER
    return _POLICY_VIOLATION if error.http_status < 500 else _INTERNAL_ERROR


async def _answer(
    conn: Request | WebSocket, error: CellworkError, headers: Mapping[str, str] | None = None
) -> Response | None:
    if isinstance(conn, WebSocket):
        # A socket route has no HTTP answer: close it (before accept, the handshake
        # gets 403), with a code that tells the client whether to come back.
        with contextlib.suppress(RuntimeError):  # the client is gone already
            await conn.close(_close_code(error), error.error_code)
        return None
    return error_response(error, headers)


async def _domain_error(conn: Request | WebSocket, exc: Exception) -> Response | None:
    error = exc if isinstance(exc, CellworkError) else Internal()
    return await _answer(conn, error)


async def _http_error(conn: Request | WebSocket, exc: Exception) -> Response | None:
    if not isinstance(exc, HTTPException):
        return await _unexpected_error(conn, exc)
    error = error_for_http_status(exc.status_code, str(exc.detail))
    return await _answer(conn, error, exc.headers)


async def _validation_error(conn: Request | WebSocket, exc: Exception) -> Response | None:
    from fastapi.exceptions import RequestValidationError  # loaded: installed only then

    if not isinstance(exc, RequestValidationError):
        return await _unexpected_error(conn, exc)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return await _answer(conn, MalformedJson("request body is not valid JSON"))
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return await _answer(conn, ValidationFailed(f"{where}: {first.get('msg', 'invalid')}"))


async def _unexpected_error(conn: Request | WebSocket, exc: Exception) -> Response | None:
    _log_unhandled(conn.scope, exc)
    return await _answer(conn, Internal("internal error"))


def _log_unhandled(scope: Scope, exc: Exception) -> None:
    call = current_call()
    _log.error(
        "http.unhandled_error",
        method=scope.get("method", "WEBSOCKET"),
        path=scope.get("path", ""),
        request_id=call.request_id if call else "",
        exc_info=exc,
    )


async def _outer_error(conn: Request | WebSocket, exc: Exception) -> Response | None:
    # Starlette hands this one only what escaped a middleware, and raises it again
    # for the server to log: answer in the contract's shape, log nothing here.
    return await _answer(conn, Internal("internal error"))


class _UnhandledErrors:
    """Innermost middleware: what no handler took is logged once and answered 500
    internal (a socket is closed with 1011), and goes no further.

    Starlette runs a handler for ``Exception`` in its outermost layer, which raises
    the exception again after answering, so the server would log every failure a
    second time; handlers keyed on anything else sit inside, but Starlette refuses a
    catch-all there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            _log_unhandled(scope, exc)
            if scope["type"] == "websocket":
                # Accepted or not, a close ends it; the socket may be gone already.
                with contextlib.suppress(Exception):
                    await send(
                        {"type": "websocket.close", "code": _INTERNAL_ERROR, "reason": "internal"}
                    )
            elif not started:  # else the server ends the half-sent answer
                await error_response(Internal("internal error"))(scope, receive, send)


def _handler(
    answer: Callable[[Request | WebSocket, Exception], Awaitable[Response | None]],
) -> ExceptionHandler:
    # Starlette types a handler as for requests or for sockets; these serve both.
    return cast(ExceptionHandler, answer)


def install_error_handlers(app: Starlette) -> None:
    """Make ``app`` (Starlette or FastAPI) answer every error from the error table.

    Call it once the app is built, before it serves (RuntimeError after). It replaces
    the app's handlers for CellworkError, HTTPException, FastAPI's
    RequestValidationError and Exception, and adds one middleware, innermost, that
    logs and answers whatever else a route raises.
    """
    if app.middleware_stack is not None:
        raise RuntimeError("install_error_handlers must run before the app serves")
    app.add_exception_handler(CellworkError, _handler(_domain_error))
    app.add_exception_handler(HTTPException, _handler(_http_error))
    if "fastapi" in sys.modules:  # a FastAPI app has loaded it; a Starlette one never will
        from fastapi.exceptions import RequestValidationError

        app.add_exception_handler(RequestValidationError, _handler(_validation_error))
    app.add_exception_handler(Exception, _handler(_outer_error))
    if not any(cast(object, layer.cls) is _UnhandledErrors for layer in app.user_middleware):
        app.user_middleware.append(Middleware(_UnhandledErrors))
