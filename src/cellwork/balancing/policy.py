"""Choosing an endpoint: power of two choices on cost, or round robin. Pure logic."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

from cellwork.balancing.stats import EndpointStats


class HasStats(Protocol):
    @property
    def stats(self) -> EndpointStats: ...


T = TypeVar("T", bound=HasStats)


class PickPolicy(Protocol):
    """Chooses one of a non-empty sequence of candidates."""

    def choose(self, candidates: Sequence[T], now: float) -> T: ...


class PowerOfTwoChoices:
    """Sample two distinct candidates at random; take the one with the lower cost."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, candidates: Sequence[T], now: float) -> T:
        n = len(candidates)
        if n == 1:
            return candidates[0]
        i = int(self._rng.random() * n)
        j = int(self._rng.random() * (n - 1))
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        return a if a.stats.cost(now) <= b.stats.cost(now) else b


class RoundRobin:
    """Take the candidates in turn."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, candidates: Sequence[T], now: float) -> T:
        self._next = (self._next + 1) % (1 << 30)
        return candidates[self._next % len(candidates)]


def make_policy(name: str) -> PickPolicy:
    """``"p2c"`` (default) or ``"round_robin"``; raises ValueError otherwise."""
    if name == "p2c":
        return PowerOfTwoChoices()
    if name in ("round_robin", "rr"):
        return RoundRobin()
    raise ValueError(f"unknown balancing policy {name!r}; use 'p2c' or 'round_robin'")
