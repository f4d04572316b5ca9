"""Every knob of a client's call pipeline in one value: ``CallPolicy``.

A frozen pydantic model rather than a dataclass so that its JSON Schema (bounds and a
description on every field, ``CallPolicy.model_json_schema()``) can be published as a
live setting and a new value validated before a running client takes it with
``Client.apply(policy)``. The defaults are the cell's: they hold the failure model's
promises (DESIGN.md) on a 2-core machine without tuning.

    CallPolicy
    ├── timeout, deadline_margin     deadline stage
    ├── retry: RetryPolicy           retry stage and its budget
    ├── breaker: BreakerPolicy       circuit breaker per target service
    ├── max_in_flight                concurrency limit per downstream
    └── ejection: EjectionPolicy     outlier ejection in the balancer
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class RetryPolicy(BaseModel):
    """When a failed attempt is made again, how long after, and how many times."""

    model_config = _FROZEN

    max_attempts: int = Field(
        3, ge=1, le=10, description="Attempts a call makes at most, the first included."
    )
    backoff_base: float = Field(
        0.025,
        ge=0.0,
        le=10.0,
        description="Seconds: the ceiling of the first back-off (full jitter draws below it).",
    )
    backoff_max: float = Field(
        0.25,
        ge=0.0,
        le=60.0,
        description="Seconds: the ceiling doubles per retry up to this.",
    )
    min_attempt_seconds: float = Field(
        0.005,
        ge=0.0,
        le=10.0,
        description="Seconds an attempt needs at least: a retry that would start with less "
        "of the deadline left is not made.",
    )
    budget_ratio: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Retry budget: retries may add at most this fraction to the calls made.",
    )
    budget_min_per_second: float = Field(
        10.0,
        ge=0.0,
        le=10_000.0,
        description="Retry budget: retries a second allowed whatever the ratio, so that a "
        "quiet client still retries.",
    )

    @model_validator(mode="after")
    def _ceiling_above_base(self) -> Self:
        if self.backoff_max < self.backoff_base:
            raise ValueError("backoff_max must be >= backoff_base")
        return self


class BreakerPolicy(BaseModel):
    """When the circuit to a target service opens, and how it closes again."""

    model_config = _FROZEN

    failure_ratio: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="The circuit opens when at least this fraction of the calls in the "
        "window failed.",
    )
    min_calls: int = Field(
        20,
        ge=1,
        le=100_000,
        description="... and at least this many calls were counted in the window.",
    )
    window_seconds: float = Field(
        10.0, gt=0.0, le=600.0, description="Seconds of calls the failure ratio is taken over."
    )
    open_seconds: float = Field(
        5.0,
        gt=0.0,
        le=600.0,
        description="Seconds an open circuit rejects every call before it lets probes through.",
    )
    half_open_probes: int = Field(
        3,
        ge=1,
        le=100,
        description="Probe calls a half-open circuit admits; all must succeed for it to close.",
    )


class EjectionPolicy(BaseModel):
    """When the balancer takes an endpoint out of rotation, for how long, and its limits."""

    model_config = _FROZEN

    consecutive_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="Failed answers in a row (UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED) that "
        "eject an endpoint.",
    )
    consecutive_refusals: int = Field(
        1,
        ge=1,
        le=1000,
        description="Refused connections in a row that eject an endpoint.",
    )
    base_seconds: float = Field(
        30.0,
        gt=0.0,
        le=3600.0,
        description="Seconds an ejection lasts, times the endpoint's ejections in a row.",
    )
    max_seconds: float = Field(
        300.0, gt=0.0, le=86_400.0, description="Seconds an ejection lasts at most (before jitter)."
    )
    jitter: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="An ejection lasts up to this fraction longer, drawn at random, so that "
        "endpoints ejected together do not come back together.",
    )
    max_ejected_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Endpoints ejected at once never exceed this fraction of the serving ones.",
    )
    panic_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Below this fraction of serving endpoints healthy (not ejected), calls "
        "are spread over all serving endpoints (panic mode).",
    )

    @model_validator(mode="after")
    def _cap_above_base(self) -> Self:
        if self.max_seconds < self.base_seconds:
            raise ValueError("max_seconds must be >= base_seconds")
        return self

    def duration(self, ejections: int, draw: float) -> float:
        """Seconds the ``ejections``-th ejection in a row lasts: ``base x ejections``,
        at most ``max_seconds``, then up to ``jitter`` longer (``draw`` in [0, 1))."""
        return min(self.base_seconds * max(ejections, 1), self.max_seconds) * (
            1.0 + self.jitter * draw
        )


class CallPolicy(BaseModel):
    """Every knob of a client's call pipeline (deadline, retry, breaker, limit, ejection)."""

    model_config = _FROZEN

    timeout: float = Field(
        5.0,
        gt=0.0,
        le=3600.0,
        description="Seconds a call may take when the caller gives no timeout.",
    )
    deadline_margin: float = Field(
        0.005,
        ge=0.0,
        le=10.0,
        description="Seconds kept back from the deadline of the call being handled, so that "
        "its own answer (or fallback) still fits after the call it makes fails.",
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retries and budget.")
    breaker: BreakerPolicy = Field(
        default_factory=BreakerPolicy, description="The circuit breaker of the target service."
    )
    max_in_flight: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Calls this client may have in flight to the target service; one more "
        "is refused at once as Overloaded, with no attempt made.",
    )
    ejection: EjectionPolicy = Field(
        default_factory=EjectionPolicy, description="Outlier ejection of endpoints."
    )
