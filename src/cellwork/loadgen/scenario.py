"""What a scenario implements, and what the engine hands it.

A scenario is one service's load: how to get ready (sign up users, open sockets),
what one request of its mix is, what else its report shows. The engine owns the
rest: the open-loop schedule, the in-flight bound, the counting, the report.

A scenario module has a ``create_scenario(...)`` function, the way a service module
has ``create_service(settings)``; its keyword parameters are the scenario's own
command-line options, each declared with ``typer.Option`` (a parameter with neither
that nor a default would become a positional argument)::

    def create_scenario(
        url: Annotated[str, typer.Option(help="the URL to load")],
        users: Annotated[int, typer.Option(help="users to sign up")] = 10,
    ) -> OneUrl:
        return OneUrl(url, users)  # ValueError here is a usage error naming the option

``cellwork.loadgen.http`` is a complete example in about 30 lines.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

StateT = TypeVar("StateT")

OK_STATUSES = range(200, 300)
UNHANDLED_ROUTE = "unhandled"  # where a request whose perform() raised is counted


class LoadgenError(Exception):
    """The run could not start: the service is unreachable or not ready, nobody signed up."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one request went: its route, and None for a success or the error it counts as.

    The error is a status code (``"503"``) or a failure kind (``"timeout"``,
    ``"connection"``, ``"invalid_body"``); the summary counts errors by it.
    """

    route: str
    error: str | None = None

    @classmethod
    def of_status(cls, route: str, status: int, ok: int | Collection[int] = OK_STATUSES) -> Outcome:
        """Success when ``status`` is ``ok`` (one code or several; any 2xx by default)."""
        fine = status == ok if isinstance(ok, int) else status in ok
        return cls(route, None if fine else str(status))

    @classmethod
    def failure(cls, route: str, exc: BaseException) -> Outcome:
        """A request that got no answer, counted by ``failure_kind(exc)``."""
        return cls(route, failure_kind(exc))


def failure_kind(exc: BaseException) -> str:
    """The error key of a request that got no answer: timeout, connection, or the type name."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(exc, httpx.TransportError | OSError):
        return "connection"
    return type(exc).__name__


@dataclass(slots=True)
class RunContext:
    """What a scenario sees of its run: the engine's bounds, a clock, a random source.

    A scenario sets ``phase`` to show what it is doing on the live line while it sets
    up or tears down. ``stopping`` turns true when the run was asked to end early
    (the first Ctrl-C): skip waits that only make the report nicer.
    """

    timeout: float  # seconds per request: give every client this deadline
    max_in_flight: int  # requests in flight at most: size connection pools for it
    run_id: str  # short and random: tells this run's users apart from another's
    rng: random.Random  # seeded when the run is, so a run's choices can be repeated
    phase: str = "starting"
    stopping: bool = False

    @staticmethod
    def now() -> float:
        """Seconds on the engine's clock, the one latencies and send times are on."""
        # Not loop.time(): uvloop's clock ticks in whole milliseconds.
        return time.perf_counter()


class Scenario(ABC, Generic[StateT]):
    """One service's load; ``StateT`` is what its session sets up and requests share.

    The engine enters ``session``, calls ``perform`` on the open-loop schedule (many
    at once, up to the in-flight bound), waits for the last answer, leaves the
    session, then asks for ``sections``.
    """

    @abstractmethod
    def session(self, run: RunContext) -> AbstractAsyncContextManager[StateT]:
        """Set up on enter (clients, users, sockets); tear down on exit.

        Tasks it starts (sockets) belong to it: cancel and await them on exit.
        Raise ``LoadgenError`` when the run cannot start.
        """

    @abstractmethod
    async def perform(self, state: StateT) -> Outcome:
        """Send one request of the mix and say how it went.

        A request that failed is an ``Outcome`` too (``Outcome.failure(route, exc)``):
        an exception that escapes is counted under the route ``unhandled``, by type.
        The engine stops the latency clock when this returns: keep work after the
        answer small.
        """

    def progress(self, state: StateT) -> Mapping[str, int | float]:
        """Counters shown on the live line after the engine's own (``{"sockets": 48}``)."""
        return {}

    def sections(self, state: StateT) -> Mapping[str, Mapping[str, Any]]:
        """Extra summary sections as JSON data, by name; called after the session ended."""
        return {}
