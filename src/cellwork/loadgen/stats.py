"""loadgen's arithmetic, free of I/O: the mix, the pacing schedule, percentiles, counters.

Times are seconds on one monotonic clock the caller owns; latencies are reported
in milliseconds only when the summary is built.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

ROUTES = ("feed", "home", "interaction")
"""The routes a mix can name: ``GET /v1/feed``, ``GET /v1/home``, ``POST /v1/interactions``."""

OK_STATUS = {"feed": 200, "home": 200, "interaction": 202}
DEFAULT_MIX = "feed=70,home=20,interaction=10"

READY_DEFINITION = (
    "time from the answer of a user's most recent feed read (GET /v1/feed, or GET /v1/home "
    "with its feed part) to the next feed.ready frame on that user's socket carrying a newer "
    "version than the read saw; frames with no read outstanding are not timed. Reads are "
    "coalesced into one refresh per window by the feed service, so this is the wait a client "
    "sees after its last read."
)


@dataclass(frozen=True, slots=True)
class Mix:
    """Relative weights of the routes; ``pick`` maps a uniform number in [0, 1) to a route."""

    weights: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(weight for _, weight in self.weights)

    def share(self, route: str) -> float:
        """The fraction of requests that go to ``route`` (0 when it is not in the mix)."""
        return dict(self.weights).get(route, 0) / self.total

    def routes(self) -> tuple[str, ...]:
        """The routes with a positive weight, in mix order."""
        return tuple(route for route, weight in self.weights if weight > 0)

    def pick(self, u: float) -> str:
        """The route for ``u`` in [0, 1): each route owns a slice as wide as its share."""
        point = min(max(u, 0.0), math.nextafter(1.0, 0.0)) * self.total
        upto = 0
        for route, weight in self.weights:
            upto += weight
            if point < upto:
                return route
        return self.routes()[-1]

    def as_dict(self) -> dict[str, int]:
        return dict(self.weights)


def parse_mix(text: str) -> Mix:
    """Parse ``"feed=70,home=20,interaction=10"``; raises ValueError with a readable message.

    Weights are non-negative integers with a positive sum; each route at most once.
    """
    weights: dict[str, int] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"mix entry {part!r} is not ROUTE=WEIGHT")
        if name not in ROUTES:
            raise ValueError(f"unknown route {name!r} in mix (routes: {', '.join(ROUTES)})")
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


INTERACTION_KINDS = Mix((("view", 6), ("like", 3), ("complete", 1)))
"""The kinds of ``POST /v1/interactions``: most are views, a few are completions."""


@dataclass(frozen=True, slots=True)
class Pacer:
    """An open-loop schedule: request ``i`` is due at ``i / rate`` seconds, whatever came back.

    ``total`` requests fit in ``duration``: every send time is strictly before it.
    """

    rate: float
    duration: float
    total: int = field(init=False)

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError("rate must be a positive number")
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise ValueError("duration must be a positive number")
        n = math.ceil(self.duration * self.rate)
        while n > 0 and self.send_at(n - 1) >= self.duration:
            n -= 1
        while self.send_at(n) < self.duration:
            n += 1
        object.__setattr__(self, "total", n)

    def send_at(self, index: int) -> float:
        """Seconds from the start at which request ``index`` is due."""
        return index / self.rate

    def due(self, elapsed: float) -> int:
        """How many requests are due by ``elapsed`` seconds (never more than ``total``)."""
        if elapsed < 0:
            return 0
        n = min(math.floor(elapsed * self.rate) + 1, self.total)
        # floor() of a float product can be one off either way; settle it on send_at.
        while n > 0 and self.send_at(n - 1) > elapsed:
            n -= 1
        while n < self.total and self.send_at(n) <= elapsed:
            n += 1
        return n


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
    partial: int = 0  # GET /v1/home answers that left a part out

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


@dataclass(slots=True)
class _Read:
    answered_at: float
    version: int


class ReadyTracker:
    """Times feed.ready delivery per user, as ``READY_DEFINITION`` says.

    Holds one outstanding read per user (the latest) and the newest version each
    user's socket announced, so a frame that beat a read's answer is not
    mistaken for the answer to a later refresh.
    """

    def __init__(self) -> None:
        self.latencies = Samples()
        self.frames = 0
        self.untimed = 0  # frames with no read outstanding (interactions, recompute passes)
        self._pending: dict[str, _Read] = {}
        self._announced: dict[str, int] = {}

    def read_answered(self, user: str, answered_at: float, version: int) -> None:
        """A feed read of ``user`` answered with ``version``: start (or restart) its clock."""
        if self._announced.get(user, -1) > version:
            # The fresh version was announced before this answer arrived: nothing to wait for.
            self._pending.pop(user, None)
            return
        self._pending[user] = _Read(answered_at, version)

    def ready(self, user: str, at: float, version: int) -> float | None:
        """A feed.ready frame for ``user``; returns the latency it completed, if any."""
        self.frames += 1
        self._announced[user] = max(version, self._announced.get(user, -1))
        read = self._pending.get(user)
        if read is None or version <= read.version:
            self.untimed += 1
            return None
        del self._pending[user]
        latency = max(0.0, at - read.answered_at)
        self.latencies.add(latency)
        return latency

    @property
    def outstanding(self) -> int:
        return len(self._pending)


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 2)


@dataclass(slots=True)
class RunStats:
    """Everything one run counts; ``summary`` turns it into the report's JSON."""

    routes: dict[str, RouteStats] = field(default_factory=lambda: {r: RouteStats() for r in ROUTES})
    planned: int = 0
    sent: int = 0
    dropped: int = 0  # due while the in-flight bound was full: never sent
    send_lag: Samples = field(default_factory=Samples)  # actual send time - scheduled time
    ready: ReadyTracker = field(default_factory=ReadyTracker)
    signup: RouteStats = field(default_factory=RouteStats)
    sockets_open: int = 0
    sockets_failed: int = 0
    socket_drops: int = 0

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

    def summary(self, elapsed: float, config: dict[str, Any]) -> dict[str, Any]:
        """The run's report as plain JSON data; latencies in milliseconds, rates per second."""
        per_second = (lambda n: round(n / elapsed, 2)) if elapsed > 0 else (lambda n: 0.0)
        routes = {}
        for name, route in self.routes.items():
            if route.count == 0 and name not in config.get("mix", {}):
                continue
            routes[name] = {
                "count": route.count,
                "ok": route.ok,
                "rps": per_second(route.count),
                "p50_ms": _ms(route.latencies.percentile(50)),
                "p90_ms": _ms(route.latencies.percentile(90)),
                "p99_ms": _ms(route.latencies.percentile(99)),
                "max_ms": _ms(route.latencies.max()),
                "errors": dict(sorted(route.errors.items())),
                **({"partial": route.partial} if name == "home" else {}),
            }
        ready = self.ready
        return {
            "config": config,
            "elapsed_s": round(elapsed, 3),
            "requests": {
                "planned": self.planned,
                "sent": self.sent,
                "completed": self.completed,
                "ok": self.ok,
                "errors": self.errors,
                "dropped": self.dropped,
                "rps": per_second(self.completed),
                "send_lag_p99_ms": _ms(self.send_lag.percentile(99)),
            },
            "routes": routes,
            "errors_by_status": dict(sorted(self.errors_by_status().items())),
            "feed_ready": {
                "count": len(ready.latencies),
                "p50_ms": _ms(ready.latencies.percentile(50)),
                "p99_ms": _ms(ready.latencies.percentile(99)),
                "frames": ready.frames,
                "untimed_frames": ready.untimed,
                "definition": READY_DEFINITION,
            },
            "signup": {
                "ok": self.signup.ok,
                "errors": dict(sorted(self.signup.errors.items())),
                "p50_ms": _ms(self.signup.latencies.percentile(50)),
            },
            "sockets": {
                "open": self.sockets_open,
                "failed": self.sockets_failed,
                "drops": self.socket_drops,
            },
        }
