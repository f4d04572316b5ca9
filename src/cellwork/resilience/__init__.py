"""Resilience: retries with a budget (breakers and bulkheads follow)."""

from cellwork.resilience.retry_budget import RetryBudget

__all__ = ["RetryBudget"]
