"""One load run: a scenario's requests sent on an open-loop schedule, counted, summarized.

The call path of a run:

1. enter the scenario's ``session`` (its set-up: clients, users, sockets);
2. start the clock; request ``i`` is due at ``i / rate`` seconds (``Pacer``) whatever
   the earlier answers did: a slow service is measured, not obeyed;
3. a due request starts a task that calls ``perform`` unless the in-flight bound is
   full, in which case it is counted as dropped and never sent;
4. each request's latency counts from its scheduled time, and how late its task
   started is the client's send lag: a client that fell behind makes the run
   inconclusive in the summary;
5. after the last send, wait for every answer, stop the clock, leave the session
   (its tear-down), and build the summary with the scenario's sections.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic

from cellwork.loadgen.pacing import Pacer
from cellwork.loadgen.scenario import (
    UNHANDLED_ROUTE,
    RunContext,
    Scenario,
    StateT,
    failure_kind,
)
from cellwork.loadgen.stats import DEFAULT_MAX_SEND_LAG, RateWindow, RunStats


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """The engine's settings; raises ValueError (naming the option) when one is out of range."""

    rate: float = 200.0  # requests a second, the whole mix together
    duration: float = 30.0  # seconds of sending
    max_in_flight: int = 256
    timeout: float = 5.0  # seconds per request, for the scenario's clients
    max_send_lag: float = DEFAULT_MAX_SEND_LAG  # p99 seconds late before a run is inconclusive
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))

    def __post_init__(self) -> None:
        for name in ("rate", "duration", "timeout", "max_send_lag"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number")
        if self.max_in_flight < 1:
            raise ValueError("--max-in-flight must be at least 1")

    def describe(self) -> dict[str, Any]:
        """The settings as the summary reports them."""
        return {
            "rate": self.rate,
            "duration": self.duration,
            "max_in_flight": self.max_in_flight,
            "timeout": self.timeout,
            "max_send_lag": self.max_send_lag,
            "run_id": self.run_id,
        }


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for the live display."""

    phase: str
    elapsed: float
    duration: float
    planned: int
    sent: int
    ok: int
    errors: int
    dropped: int
    in_flight: int
    rate: float  # answers per second over the last two seconds
    extra: tuple[tuple[str, int | float], ...] = ()  # the scenario's counters


class LoadRun(Generic[StateT]):
    """One run of ``scenario``. ``run()`` returns the summary; ``stop()`` ends the sending early.

    Owns its request tasks: they live in a task group that is drained before the
    scenario's session ends. ``name`` and ``options`` say in the summary what ran.
    """

    def __init__(
        self,
        config: LoadConfig,
        scenario: Scenario[StateT],
        *,
        name: str | None = None,
        options: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.scenario = scenario
        self.name = name or type(scenario).__name__
        self.options = dict(options or {})
        self.stats = RunStats()
        self.context = RunContext(
            timeout=config.timeout,
            max_in_flight=config.max_in_flight,
            run_id=config.run_id,
            rng=random.Random(seed),
        )
        self._in_flight = 0
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._rate = RateWindow()
        self._extra: Callable[[], Mapping[str, int | float]] = dict

    @property
    def phase(self) -> str:
        return self.context.phase

    def stop(self) -> None:
        """Send nothing more; answers in flight are still awaited and counted."""
        self.context.stopping = True

    def elapsed(self) -> float:
        if self._started_at is None:
            return 0.0
        return (self._ended_at or self.context.now()) - self._started_at

    def progress(self) -> Progress:
        """The current counters; call from the loop that runs ``run()``."""
        stats = self.stats
        self._rate.observe(self.context.now(), stats.completed)
        return Progress(
            phase=self.phase,
            elapsed=self.elapsed(),
            duration=self.config.duration,
            planned=stats.planned,
            sent=stats.sent,
            ok=stats.ok,
            errors=stats.errors,
            dropped=stats.dropped,
            in_flight=self._in_flight,
            rate=self._rate.rate(),
            extra=tuple(self._extra().items()),
        )

    async def run(self) -> dict[str, Any]:
        """Set up, drive the schedule for the duration, tear down; the summary as JSON data.

        Raises whatever the scenario's session raises (``LoadgenError`` when it cannot start).
        """
        context = self.context
        context.phase = "setting up"
        async with self.scenario.session(context) as state:
            self._extra = lambda: self.scenario.progress(state)
            context.phase = "running"
            self._started_at = context.now()
            async with asyncio.TaskGroup() as requests:
                await self._drive(requests, state, self._started_at)
                context.phase = "draining"
            self._ended_at = context.now()
            context.phase = "tearing down"
        context.phase = "done"
        config = {"scenario": self.name, **self.config.describe(), "options": self.options}
        summary = self.stats.summary(self.elapsed(), config, self.config.max_send_lag)
        summary["requests"]["stopped_early"] = context.stopping
        summary["sections"] = {
            name: dict(section) for name, section in self.scenario.sections(state).items()
        }
        return summary

    async def _drive(self, requests: asyncio.TaskGroup, state: StateT, start: float) -> None:
        """Send on the open-loop schedule; what the in-flight bound refuses is dropped."""
        cfg, context = self.config, self.context
        pacer = Pacer(cfg.rate, cfg.duration)
        self.stats.planned = pacer.total
        index = 0
        while index < pacer.total and not context.stopping:
            due = pacer.due(context.now() - start)
            while index < due:
                if self._in_flight >= cfg.max_in_flight:
                    self.stats.dropped += 1
                else:
                    self._in_flight += 1
                    self.stats.sent += 1
                    requests.create_task(self._request(state, start + pacer.send_at(index)))
                index += 1
            if index < pacer.total:
                await asyncio.sleep(max(0.0, start + pacer.send_at(index) - context.now()))

    async def _request(self, state: StateT, scheduled: float) -> None:
        """One request; its latency counts from its scheduled time (open loop)."""
        now = self.context.now
        try:
            self.stats.send_lag.add(now() - scheduled)
            try:
                outcome = await self.scenario.perform(state)
                route, error = outcome.route, outcome.error
            except Exception as exc:  # counted, not hidden: the summary names it by type
                route, error = UNHANDLED_ROUTE, failure_kind(exc)
            self.stats.route(route).record(now() - scheduled, error)
        finally:
            self._in_flight -= 1
