"""cellwork: a platform for scalable, reliable Python microservice backends.

The public face a service author needs: ``Service`` (declare gRPC servicers and
hooks, get clients), ``ServiceSettings``, ``Client``, ``CallPolicy`` (the knobs of a
client's call pipeline: ``service.client(name, kind, policy=CallPolicy(...))``) and
the error classes.
Everything else lives in the part packages (``cellwork.rpc``, ``cellwork.discovery``...).
"""

import os as _os

# cellwork forks instance processes; gRPC's fork handlers are not needed and only warn.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from cellwork.config.settings import ServiceSettings
from cellwork.errors import (
    AlreadyExists,
    CellworkError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    MalformedJson,
    MethodNotAllowed,
    NoEndpoints,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
)
from cellwork.resilience.policy import CallPolicy
from cellwork.rpc.client import Client
from cellwork.rpc.context import CallContext, current_call
from cellwork.service import Service

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "CallContext",
    "CallPolicy",
    "CellworkError",
    "Client",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "MalformedJson",
    "MethodNotAllowed",
    "NoEndpoints",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "PermissionDenied",
    "ResourceExhausted",
    "Service",
    "ServiceSettings",
    "Unauthenticated",
    "Unavailable",
    "ValidationFailed",
    "__version__",
    "current_call",
]
