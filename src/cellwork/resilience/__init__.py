"""Resilience: back-off with full jitter, retries within a budget (breakers follow)."""

from cellwork.resilience.backoff import backoff, backoff_ceiling
from cellwork.resilience.retry_budget import RetryBudget

__all__ = ["RetryBudget", "backoff", "backoff_ceiling"]
