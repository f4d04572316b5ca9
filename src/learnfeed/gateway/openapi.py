"""The errors each group of routes can answer, for the OpenAPI document.

Routes pass these classes to ``cellwork.gateway.error_responses``: statuses, codes and
the error schema all come from cellwork's one error table (``cellwork.errors``).
"""

from __future__ import annotations

from cellwork import (
    DeadlineExceeded,
    MalformedJson,
    PayloadTooLarge,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
)

# What every route behind a bearer token can answer.
AUTHED = (Unauthenticated, ResourceExhausted, Unavailable, DeadlineExceeded)
# What a route with a JSON body can answer before its handler runs.
BODY = (MalformedJson, PayloadTooLarge, ValidationFailed)
