"""Weighted choice among a scenario's routes, and the ``NAME=WEIGHT,...`` text that sets it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Mix:
    """Relative weights of named choices; ``pick`` maps a uniform number in [0, 1) to one.

    Pure arithmetic: the caller draws the number, so a seeded ``random.Random`` makes a
    run repeatable and a grid of numbers proves the shares exactly.
    """

    weights: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(weight for _, weight in self.weights)

    def share(self, name: str) -> float:
        """The fraction of picks that go to ``name`` (0 when it is not in the mix)."""
        return dict(self.weights).get(name, 0) / self.total

    def names(self) -> tuple[str, ...]:
        """The names with a positive weight, in mix order."""
        return tuple(name for name, weight in self.weights if weight > 0)

    def pick(self, u: float) -> str:
        """The name for ``u`` in [0, 1): each name owns a slice as wide as its share."""
        point = min(max(u, 0.0), math.nextafter(1.0, 0.0)) * self.total
        upto = 0
        for name, weight in self.weights:
            upto += weight
            if point < upto:
                return name
        return self.names()[-1]

    def as_dict(self) -> dict[str, int]:
        return dict(self.weights)

    def as_text(self) -> str:
        """The mix as ``parse_mix`` reads it."""
        return ",".join(f"{name}={weight}" for name, weight in self.weights)


def parse_mix(text: str, names: Iterable[str]) -> Mix:
    """Parse ``"feed=70,home=20"`` over the allowed ``names``; ValueError with a readable message.

    Weights are non-negative integers with a positive sum; each name at most once.
    """
    allowed = tuple(names)
    weights: dict[str, int] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"mix entry {part!r} is not NAME=WEIGHT")
        if name not in allowed:
            raise ValueError(f"unknown route {name!r} in mix (routes: {', '.join(allowed)})")
        if name in weights:
            raise ValueError(f"route {name!r} appears twice in the mix")
        try:
            weight = int(raw.strip())
        except ValueError:
            raise ValueError(
                f"weight of {name!r} must be an integer, not {raw.strip()!r}"
            ) from None
        if weight < 0:
            raise ValueError(f"weight of {name!r} must not be negative")
        weights[name] = weight
    if sum(weights.values()) <= 0:
        raise ValueError("the mix needs at least one route with a positive weight")
    return Mix(tuple(weights.items()))
