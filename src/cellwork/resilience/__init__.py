"""Resilience: back-off with full jitter, retries within a budget, adaptive concurrency
limits, stopping a task for sure (breakers follow)."""

from cellwork.resilience.adaptive import AdaptiveLimit, ConcurrencyLimiter, LimitSettings
from cellwork.resilience.backoff import backoff, backoff_ceiling
from cellwork.resilience.retry_budget import RetryBudget
from cellwork.resilience.tasks import stop_task

__all__ = [
    "AdaptiveLimit",
    "ConcurrencyLimiter",
    "LimitSettings",
    "RetryBudget",
    "backoff",
    "backoff_ceiling",
    "stop_task",
]
