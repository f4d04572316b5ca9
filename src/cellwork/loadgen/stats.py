"""loadgen's counting, free of I/O: samples, percentiles, per-route counters, the summary.

Times are seconds on one monotonic clock the caller owns; latencies are reported
in milliseconds only when the summary is built.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

DEFAULT_MAX_SEND_LAG = 0.01
"""Seconds of p99 send lag past which a run measured its client rather than the service."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0-100) of ascending values; NaN when empty.

    Always one of the values: the smallest one with at least ``q`` percent at or below it.
    """
    if not 0 <= q <= 100:
        raise ValueError("q must be within [0, 100]")
    n = len(sorted_values)
    if n == 0:
        return math.nan
    rank = math.ceil(Fraction(q) * n / 100)  # exact: q / 100 * n can land a hair above
    return sorted_values[min(max(rank, 1), n) - 1]


class Samples:
    """Latency samples in seconds; 8 bytes each, percentiles exact (nearest rank)."""

    __slots__ = ("_sorted", "_values")

    def __init__(self, values: Iterable[float] = ()) -> None:
        self._values = array("d", values)
        self._sorted = False

    def add(self, seconds: float) -> None:
        self._values.append(seconds)
        self._sorted = False

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[float]:
        return iter(self._values)

    def percentile(self, q: float) -> float:
        if not self._sorted:
            self._values = array("d", sorted(self._values))
            self._sorted = True
        return percentile(self._values, q)

    def max(self) -> float:
        return max(self._values) if self._values else math.nan


@dataclass(slots=True)
class RouteStats:
    """What one route answered: successes, errors by status (or by failure kind), latency."""

    latencies: Samples = field(default_factory=Samples)
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return self.ok + sum(self.errors.values())

    def record(self, seconds: float, error: str | None = None) -> None:
        """Count one answered (or failed) request; ``error`` is a status code or a failure kind."""
        self.latencies.add(seconds)
        if error is None:
            self.ok += 1
        else:
            self.errors[error] += 1


class RateWindow:
    """A rate over the last ``span`` seconds from samples of a running total."""

    __slots__ = ("_points", "span")

    def __init__(self, span: float = 2.0, max_points: int = 256) -> None:
        self.span = span
        self._points: deque[tuple[float, int]] = deque(maxlen=max_points)

    def observe(self, now: float, total: int) -> None:
        self._points.append((now, total))
        while len(self._points) > 2 and now - self._points[1][0] >= self.span:
            self._points.popleft()

    def rate(self) -> float:
        """Per second between the oldest and newest sample kept; 0 before two samples."""
        if len(self._points) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._points[0], self._points[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def milliseconds(seconds: float) -> float | None:
    """Milliseconds rounded for a report; None (JSON null) for an empty percentile."""
    return None if math.isnan(seconds) else round(seconds * 1000, 2)


def client_fell_behind(send_lag: Samples, max_send_lag: float) -> bool:
    """Whether the client sent so late that the run measured itself, not the service.

    Latencies count from the scheduled time, so a late client still reports honest
    waits, but the wait is then its own: past ``max_send_lag`` at p99 the numbers say
    nothing about the service under the planned rate.
    """
    return len(send_lag) > 0 and send_lag.percentile(99) > max_send_lag


@dataclass(slots=True)
class RunStats:
    """Everything the engine counts in one run; ``summary`` turns it into the report's JSON."""

    routes: dict[str, RouteStats] = field(default_factory=dict)  # in order of first answer
    planned: int = 0
    sent: int = 0
    dropped: int = 0  # due while the in-flight bound was full: never sent
    send_lag: Samples = field(default_factory=Samples)  # actual send time - scheduled time

    def route(self, name: str) -> RouteStats:
        """The counters of route ``name``, created on its first answer."""
        stats = self.routes.get(name)
        if stats is None:
            stats = self.routes[name] = RouteStats()
        return stats

    @property
    def completed(self) -> int:
        return sum(route.count for route in self.routes.values())

    @property
    def ok(self) -> int:
        return sum(route.ok for route in self.routes.values())

    @property
    def errors(self) -> int:
        return self.completed - self.ok

    def errors_by_status(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for route in self.routes.values():
            total.update(route.errors)
        return total

    def summary(
        self,
        elapsed: float,
        config: Mapping[str, Any],
        max_send_lag: float = DEFAULT_MAX_SEND_LAG,
    ) -> dict[str, Any]:
        """The run's report as plain JSON data; latencies in milliseconds, rates per second.

        ``conclusive`` is false when the client fell behind its own schedule
        (``client_fell_behind``): such a run must not be read as the service's numbers.
        """
        per_second = (lambda n: round(n / elapsed, 2)) if elapsed > 0 else (lambda n: 0.0)
        routes = {
            name: {
                "count": route.count,
                "ok": route.ok,
                "rps": per_second(route.count),
                "p50_ms": milliseconds(route.latencies.percentile(50)),
                "p90_ms": milliseconds(route.latencies.percentile(90)),
                "p99_ms": milliseconds(route.latencies.percentile(99)),
                "max_ms": milliseconds(route.latencies.max()),
                "errors": dict(sorted(route.errors.items())),
            }
            for name, route in self.routes.items()
        }
        behind = client_fell_behind(self.send_lag, max_send_lag)
        return {
            "config": dict(config),
            "elapsed_s": round(elapsed, 3),
            "conclusive": not behind,
            "requests": {
                "planned": self.planned,
                "sent": self.sent,
                "completed": self.completed,
                "ok": self.ok,
                "errors": self.errors,
                "dropped": self.dropped,
                "rps": per_second(self.completed),
            },
            "client": {
                "send_lag_p50_ms": milliseconds(self.send_lag.percentile(50)),
                "send_lag_p99_ms": milliseconds(self.send_lag.percentile(99)),
                "send_lag_max_ms": milliseconds(self.send_lag.max()),
                "max_send_lag_ms": milliseconds(max_send_lag),
                "fell_behind": behind,
            },
            "routes": routes,
            "errors_by_status": dict(sorted(self.errors_by_status().items())),
        }
