"""The error table: every cellwork exception, and what it becomes on the wire.

    CellworkError                 base of every error a service raises on purpose
    ├── InvalidArgument           the caller sent something malformed   INVALID_ARGUMENT / 400
    ├── Unauthenticated           no or bad credentials                 UNAUTHENTICATED  / 401
    ├── PermissionDenied          credentials fine, action forbidden    PERMISSION_DENIED / 403
    ├── NotFound                  the named thing does not exist        NOT_FOUND        / 404
    ├── AlreadyExists             the thing to create exists already    ALREADY_EXISTS   / 409
    ├── FailedPrecondition        state forbids the action now          FAILED_PRECONDITION / 409
    ├── ResourceExhausted         rate or size limit hit                RESOURCE_EXHAUSTED / 429
    ├── DeadlineExceeded          the call's deadline passed            DEADLINE_EXCEEDED / 504
    ├── Unavailable               no healthy endpoint, or draining      UNAVAILABLE      / 503
    │   └── NoEndpoints           the registry lists none for a service UNAVAILABLE      / 503
    └── Internal                  a bug or an unexpected failure        INTERNAL         / 500

Servers raise these from handlers; the server chain maps them to a gRPC status
with the message as details. Clients map a failed call's status back to the same
class, so ``except NotFound`` works across a hop. Anything else a handler raises
is logged once at the boundary and becomes INTERNAL with a generic message.
"""

from __future__ import annotations

import grpc


class CellworkError(Exception):
    """Base of every error cellwork and its services raise on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    http_status: int = 500
    error_code: str = "unknown"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.error_code)
        self.message = message or self.error_code


class InvalidArgument(CellworkError):
    """The request is malformed or fails validation."""

    code, http_status, error_code = grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_argument"


class Unauthenticated(CellworkError):
    """Credentials are missing or invalid."""

    code, http_status, error_code = grpc.StatusCode.UNAUTHENTICATED, 401, "unauthenticated"


class PermissionDenied(CellworkError):
    """The caller is known but may not do this."""

    code, http_status, error_code = grpc.StatusCode.PERMISSION_DENIED, 403, "permission_denied"


class NotFound(CellworkError):
    """The named resource does not exist."""

    code, http_status, error_code = grpc.StatusCode.NOT_FOUND, 404, "not_found"


class AlreadyExists(CellworkError):
    """The resource to create exists already."""

    code, http_status, error_code = grpc.StatusCode.ALREADY_EXISTS, 409, "already_exists"


class FailedPrecondition(CellworkError):
    """The current state forbids the action."""

    code, http_status, error_code = grpc.StatusCode.FAILED_PRECONDITION, 409, "conflict"


class ResourceExhausted(CellworkError):
    """A rate, size or concurrency limit was hit."""

    code, http_status, error_code = grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "rate_limited"


class DeadlineExceeded(CellworkError):
    """The call's deadline passed before an answer."""

    code, http_status, error_code = grpc.StatusCode.DEADLINE_EXCEEDED, 504, "deadline_exceeded"


class Unavailable(CellworkError):
    """The callee is down, draining or unreachable; safe to retry elsewhere."""

    code, http_status, error_code = grpc.StatusCode.UNAVAILABLE, 503, "unavailable"


class NoEndpoints(Unavailable):
    """The registry lists no usable instance of the service."""


class Internal(CellworkError):
    """An unexpected failure; details are in the server's log, not the answer."""

    code, http_status, error_code = grpc.StatusCode.INTERNAL, 500, "internal"


_BY_CODE: dict[grpc.StatusCode, type[CellworkError]] = {
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
_BY_CODE[grpc.StatusCode.CANCELLED] = Unavailable
_BY_CODE[grpc.StatusCode.UNIMPLEMENTED] = Internal
_BY_CODE[grpc.StatusCode.DATA_LOSS] = Internal


def error_for_status(code: grpc.StatusCode, message: str) -> CellworkError:
    """Return the domain error matching a gRPC status (INTERNAL for unknown codes)."""
    return _BY_CODE.get(code, Internal)(message)
