"""The error table: every cellwork exception, and what it becomes on the wire.

    class                          gRPC status          HTTP  public code
    CellworkError                  UNKNOWN              500   unknown
    ├── InvalidArgument            INVALID_ARGUMENT     400   invalid_argument
    │   ├── MalformedJson          INVALID_ARGUMENT     400   malformed_json
    │   ├── ValidationFailed       INVALID_ARGUMENT     422   validation_failed
    │   └── PayloadTooLarge        INVALID_ARGUMENT     413   payload_too_large
    ├── Unauthenticated            UNAUTHENTICATED      401   unauthenticated
    ├── PermissionDenied           PERMISSION_DENIED    403   permission_denied
    ├── NotFound                   NOT_FOUND            404   not_found
    ├── MethodNotAllowed           UNIMPLEMENTED        405   method_not_allowed
    ├── FailedPrecondition         FAILED_PRECONDITION  409   conflict
    ├── AlreadyExists              ALREADY_EXISTS       409   already_exists
    ├── DeadlineExceeded           DEADLINE_EXCEEDED    504   deadline_exceeded
    ├── Unavailable                UNAVAILABLE          503   unavailable
    │   └── NoEndpoints            UNAVAILABLE          503   unavailable
    ├── ResourceExhausted          RESOURCE_EXHAUSTED   429   rate_limited
    │   └── Overloaded             RESOURCE_EXHAUSTED   503   overloaded
    └── Internal                   INTERNAL             500   internal

The public code is what an HTTP client reads in ``{"error": {"code": ...}}`` and what
a gRPC caller's client uses to rebuild the class; ``PUBLIC_ERRORS`` lists the classes
that own one, in this order. Every error may carry ``retry_after`` (seconds): the edge
answers it as ``Retry-After``.

Servers raise these from handlers; the server chain maps them to a gRPC status with
the message as details, and, on a failed call only, puts the public code (and the
retry-after, if any) in trailing metadata. The client rebuilds the exact class from
that trailer, so ``except Overloaded`` works across a hop although rate limits and
overload share RESOURCE_EXHAUSTED; from a server that sends no trailer (not a
cellwork one) it falls back to the status's general class. Anything else a handler
raises is logged once at the boundary and becomes INTERNAL with a generic message.
``NoEndpoints`` is the caller's own view of an empty registry: a further caller sees
``Unavailable``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import grpc

ERROR_TRAILER = "x-cellwork-error"
"""Trailing metadata key of a failed call: the error's public code."""
RETRY_AFTER_TRAILER = "x-cellwork-retry-after"
"""Trailing metadata key of a failed call: seconds the caller should wait, when known."""


class CellworkError(Exception):
    """Base of every error cellwork and its services raise on purpose.

    ``retry_after`` (seconds, optional) tells the caller when trying again may help;
    it travels across a gRPC hop and becomes ``Retry-After`` at the HTTP edge.
    Raises ValueError for a negative or non-finite ``retry_after``.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    http_status: int = 500
    error_code: str = "unknown"

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        if retry_after is not None and not (math.isfinite(retry_after) and retry_after >= 0):
            raise ValueError(f"retry_after must be a finite number of seconds >= 0: {retry_after}")
        super().__init__(message or self.error_code)
        self.message = message or self.error_code
        self.retry_after = retry_after


class InvalidArgument(CellworkError):
    """The request is malformed or fails validation."""

    code, http_status, error_code = grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_argument"


class MalformedJson(InvalidArgument):
    """The request body is not valid JSON."""

    error_code = "malformed_json"


class ValidationFailed(InvalidArgument):
    """A well-formed request breaks the contract's schema (the message names the field)."""

    http_status, error_code = 422, "validation_failed"


class PayloadTooLarge(InvalidArgument):
    """The request body is over the size limit.

    INVALID_ARGUMENT, not RESOURCE_EXHAUSTED: only a smaller request can succeed, and
    RESOURCE_EXHAUSTED reads as "try again later" to callers (``except
    ResourceExhausted`` paths back off and retry).
    """

    http_status, error_code = 413, "payload_too_large"


class Unauthenticated(CellworkError):
    """Credentials are missing or invalid."""

    code, http_status, error_code = grpc.StatusCode.UNAUTHENTICATED, 401, "unauthenticated"


class PermissionDenied(CellworkError):
    """The caller is known but may not do this."""

    code, http_status, error_code = grpc.StatusCode.PERMISSION_DENIED, 403, "permission_denied"


class NotFound(CellworkError):
    """The named resource does not exist."""

    code, http_status, error_code = grpc.StatusCode.NOT_FOUND, 404, "not_found"


class MethodNotAllowed(CellworkError):
    """The resource exists but does not answer this method.

    UNIMPLEMENTED is gRPC's own status for a method a server does not serve. Without
    the trailer, UNIMPLEMENTED still maps back to ``Internal``: a callee lacking a
    method is a deployment fault, not something to blame an HTTP client for.
    """

    code, http_status, error_code = grpc.StatusCode.UNIMPLEMENTED, 405, "method_not_allowed"


class FailedPrecondition(CellworkError):
    """The current state forbids the action."""

    code, http_status, error_code = grpc.StatusCode.FAILED_PRECONDITION, 409, "conflict"


class AlreadyExists(CellworkError):
    """The resource to create exists already."""

    code, http_status, error_code = grpc.StatusCode.ALREADY_EXISTS, 409, "already_exists"


class DeadlineExceeded(CellworkError):
    """The call's deadline passed before an answer."""

    code, http_status, error_code = grpc.StatusCode.DEADLINE_EXCEEDED, 504, "deadline_exceeded"


class Unavailable(CellworkError):
    """The callee is down, draining or unreachable; safe to retry elsewhere."""

    code, http_status, error_code = grpc.StatusCode.UNAVAILABLE, 503, "unavailable"


class NoEndpoints(Unavailable):
    """The registry lists no usable instance of the service."""


class ResourceExhausted(CellworkError):
    """The caller went over a rate limit or quota; ``retry_after`` says when it refills."""

    code, http_status, error_code = grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "rate_limited"


class Overloaded(ResourceExhausted):
    """The server sheds load (a full queue, a concurrency limit): not the caller's fault.

    503, not 429: the caller did nothing wrong and another instance, or the same one a
    moment later, can serve it. A ResourceExhausted, so code that backs off on
    ``except ResourceExhausted`` does so for both.
    """

    http_status, error_code = 503, "overloaded"


class Internal(CellworkError):
    """An unexpected failure; details are in the server's log, not the answer."""

    code, http_status, error_code = grpc.StatusCode.INTERNAL, 500, "internal"


PUBLIC_ERRORS: tuple[type[CellworkError], ...] = (
    InvalidArgument,
    MalformedJson,
    ValidationFailed,
    PayloadTooLarge,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    MethodNotAllowed,
    FailedPrecondition,
    AlreadyExists,
    DeadlineExceeded,
    Unavailable,
    ResourceExhausted,
    Overloaded,
    Internal,
)
"""The rows of the table: one class per public code. Where two share an HTTP status,
the first listed is that status's general class (FailedPrecondition for 409,
Unavailable for 503)."""

_BY_PUBLIC_CODE: dict[str, type[CellworkError]] = {cls.error_code: cls for cls in PUBLIC_ERRORS}

# Without a trailer only the status is known: each maps to its general class.
_BY_STATUS: dict[grpc.StatusCode, type[CellworkError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        DeadlineExceeded,
        Unavailable,
        Internal,
    )
}
_BY_STATUS[grpc.StatusCode.CANCELLED] = Unavailable
_BY_STATUS[grpc.StatusCode.UNIMPLEMENTED] = Internal
_BY_STATUS[grpc.StatusCode.DATA_LOSS] = Internal

_BY_HTTP_STATUS: dict[int, type[CellworkError]] = {}
for _cls in PUBLIC_ERRORS:
    _BY_HTTP_STATUS.setdefault(_cls.http_status, _cls)
del _cls


def error_trailers(error: CellworkError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata a server sends with a failed call: the public code, and
    the retry-after in seconds when the error has one."""
    trailers: tuple[tuple[str, str], ...] = ((ERROR_TRAILER, error.error_code),)
    if error.retry_after is not None:
        trailers += ((RETRY_AFTER_TRAILER, repr(float(error.retry_after))),)
    return trailers


def _text(value: str | bytes) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _retry_after(text: str) -> float | None:
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def error_for_status(
    code: grpc.StatusCode,
    message: str,
    trailers: Iterable[Any] | None = None,
) -> CellworkError:
    """Return the domain error for a failed call: the exact class named by the trailer
    (``error_trailers``), else the status's general class (INTERNAL for unknown codes).

    ``trailers`` are the call's trailing metadata, ``(key, value)`` pairs as gRPC gives
    them. A trailer naming a class of another status, or an unknown code, is ignored: a
    server's trailer may refine the status, never change it.
    """
    cls = _BY_STATUS.get(code, Internal)
    retry_after = None
    for key, value in trailers or ():
        if not isinstance(value, str | bytes):
            continue
        if key == ERROR_TRAILER:
            named = _BY_PUBLIC_CODE.get(_text(value))
            if named is not None and named.code == code:
                cls = named
        elif key == RETRY_AFTER_TRAILER:
            retry_after = _retry_after(_text(value))
    return cls(message, retry_after=retry_after)


def error_for_http_status(
    status: int, message: str = "", *, retry_after: float | None = None
) -> CellworkError:
    """The domain error for an HTTP status the edge must answer (a router's 404 or 405).

    The first class of ``PUBLIC_ERRORS`` with that status; a status the table lacks
    becomes ``InvalidArgument`` (4xx) or ``Internal`` (anything else), so every answer
    of the edge is a row of the table.
    """
    cls = _BY_HTTP_STATUS.get(status) or (InvalidArgument if 400 <= status < 500 else Internal)
    return cls(message, retry_after=retry_after)
