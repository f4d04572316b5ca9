"""Resilience: the call pipeline's stages and their pure cores (deadline, retries within a
budget, circuit breakers, concurrency limits), adaptive concurrency limits for servers,
back-off with full jitter, stopping a task for sure."""

from cellwork.resilience.adaptive import AdaptiveLimit, ConcurrencyLimiter, LimitSettings
from cellwork.resilience.backoff import backoff, backoff_ceiling
from cellwork.resilience.breaker import BreakerState, CircuitBreaker
from cellwork.resilience.limit import ConcurrencyLimit
from cellwork.resilience.policy import BreakerPolicy, CallPolicy, EjectionPolicy, RetryPolicy
from cellwork.resilience.retry_budget import RetryBudget
from cellwork.resilience.tasks import stop_task

__all__ = [
    "AdaptiveLimit",
    "BreakerPolicy",
    "BreakerState",
    "CallPolicy",
    "CircuitBreaker",
    "ConcurrencyLimit",
    "ConcurrencyLimiter",
    "EjectionPolicy",
    "LimitSettings",
    "RetryBudget",
    "RetryPolicy",
    "backoff",
    "backoff_ceiling",
    "stop_task",
]
