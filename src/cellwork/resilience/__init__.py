"""Resilience: back-off with full jitter, retries within a budget, stopping a task for sure
(breakers follow)."""

from cellwork.resilience.backoff import backoff, backoff_ceiling
from cellwork.resilience.retry_budget import RetryBudget
from cellwork.resilience.tasks import stop_task

__all__ = ["RetryBudget", "backoff", "backoff_ceiling", "stop_task"]
