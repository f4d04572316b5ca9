"""The cell's embedded nats-server, kept alive by the supervisor's loop like an instance.

Part of the state machine (``SupervisorCore`` hands it the NATS events): no timers,
no I/O of its own beyond what the ``NatsLauncher`` does. A process waiter posts
``NatsExited``; a readiness waiter posts ``NatsReady``; the loop's ``Tick`` starts
the server again once its back-off (short, with full jitter) is over. Every start
listens on the same port with the same store, so clients reconnect where they were
and file-stored streams survive. Only an embedded server is kept: an external
``--nats-url`` is not the cell's to restart.

Its life::

    UP --exited--> DOWN --back-off (or chaos --down) later--> STARTING
    STARTING --accepts connections--> UP      (supervisor.nats_restarted)
    STARTING --not within ready_timeout--> SIGKILL --exited--> DOWN
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Protocol

from cellwork.observability.logging import get_logger
from cellwork.resilience.backoff import backoff
from cellwork.runtime.events import NatsExited, NatsReady, RequestRefused, SupervisorEvent
from cellwork.runtime.processes import InstanceProcess

_log = get_logger("cellwork.supervisor")

# A restart is meant to be quick: instances are waiting on it. Full jitter between 0
# and 0.2 s, doubling to at most 5 s while it keeps dying.
RESTART_BACKOFF_BASE = 0.2
RESTART_BACKOFF_MAX = 5.0
STABLE_AFTER = 10.0  # seconds up that forget earlier failures
READY_TIMEOUT = 15.0  # seconds a start may take to accept connections (a big store loads)


class NatsLauncher(Protocol):
    """Starts the embedded nats-server (``nats_server.EmbeddedNats`` is the real one)."""

    @property
    def url(self) -> str: ...

    @property
    def process(self) -> InstanceProcess | None:
        """The latest process started."""

    async def launch(self) -> InstanceProcess:
        """Start a server on the cell's port with its store; returns without waiting."""
        ...

    async def wait_ready(self, timeout: float) -> bool:
        """True once the latest process accepts connections, within ``timeout`` seconds."""
        ...


class NatsState(StrEnum):
    UP = "up"
    DOWN = "down"  # exited; waiting out the back-off
    STARTING = "starting"  # started again; not yet accepting connections


class NatsKeeper:
    """Watches the embedded nats-server and starts it again when it exits.

    ``monotonic``/``wall`` read the time, ``rng`` draws the jitter, ``post`` queues
    events for the loop. Not thread-safe: the supervisor's loop calls every method.
    """

    def __init__(
        self,
        launcher: NatsLauncher,
        *,
        post: Callable[[SupervisorEvent], None],
        monotonic: Callable[[], float],
        wall: Callable[[], float],
        rng: Callable[[], float] = random.random,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self._launcher = launcher
        self._post = post
        self._monotonic = monotonic
        self._wall = wall
        self._rng = rng
        self._ready_timeout = ready_timeout
        self.state = NatsState.UP
        self.process: InstanceProcess | None = None
        self.restarts = 0
        self.up_since = monotonic()
        self.down_since: float | None = None  # monotonic
        self.down_since_wall: float | None = None
        self.next_start_at = 0.0
        self._failures = 0
        self._hold: float | None = None  # chaos: seconds to stay down after the next exit
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Watch the process the launcher has already started (and found ready)."""
        process = self._launcher.process
        if process is None:
            raise RuntimeError("start the embedded nats-server before watching it")
        self.process, self.state, self.up_since = process, NatsState.UP, self._monotonic()
        self._spawn_task(self._wait_exit(process), "nats-exit")

    async def close(self) -> None:
        """Stop watching: no restart after this (the shell stops the server itself)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- reading ------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.state is NatsState.UP

    def status(self) -> dict[str, Any]:
        """The server as ``cellwork status --json`` prints it under ``nats``."""
        now = self._monotonic()
        return {
            "embedded": True,
            "url": self._launcher.url,
            "state": self.state.value,
            "pid": self.process.pid if self.process is not None else None,
            "restarts": self.restarts,
            "down_since": self.down_since_wall,
            "down_for": None if self.down_since is None else round(now - self.down_since, 1),
        }

    # -- events -------------------------------------------------------------------------

    def on_exit(self, process: InstanceProcess, code: int) -> None:
        if process is not self.process:
            return  # news of an earlier start
        now = self._monotonic()
        if self.state is NatsState.UP and now - self.up_since > STABLE_AFTER:
            self._failures = 0
        self._failures += 1
        self.restarts += 1
        if self.down_since is None:
            self.down_since, self.down_since_wall = now, self._wall()
        self.process, self.state = None, NatsState.DOWN
        hold, self._hold = self._hold, None
        if hold:
            delay = hold
        else:
            delay = backoff(
                self._failures, base=RESTART_BACKOFF_BASE, cap=RESTART_BACKOFF_MAX, rng=self._rng
            )
        self.next_start_at = now + delay
        _log.warning("supervisor.nats_exited", code=code, restart_in=round(delay, 3))

    async def on_tick(self) -> None:
        """Start the server again once its back-off is over."""
        if self.state is not NatsState.DOWN or self._monotonic() < self.next_start_at:
            return
        try:
            process = await self._launcher.launch()
        except Exception as exc:  # no binary, no file descriptors: try again later
            self._failures += 1
            delay = backoff(
                self._failures, base=RESTART_BACKOFF_BASE, cap=RESTART_BACKOFF_MAX, rng=self._rng
            )
            self.next_start_at = self._monotonic() + delay
            _log.error("supervisor.nats_start_failed", error=str(exc), retry_in=round(delay, 3))
            return
        self.process, self.state = process, NatsState.STARTING
        self._spawn_task(self._wait_exit(process), "nats-exit")
        self._spawn_task(self._wait_ready(process), "nats-ready")

    def on_ready(self, process: InstanceProcess, ok: bool) -> None:
        if process is not self.process or self.state is not NatsState.STARTING:
            return
        if not ok:
            _log.error("supervisor.nats_start_failed", error="not accepting connections in time")
            _kill(process)  # its exit schedules the next try
            return
        now = self._monotonic()
        down_for = 0.0 if self.down_since is None else now - self.down_since
        self.state, self.up_since = NatsState.UP, now
        self.down_since = self.down_since_wall = None
        _log.info(
            "supervisor.nats_restarted",
            url=self._launcher.url,
            pid=process.pid,
            restarts=self.restarts,
            down_for=round(down_for, 3),
        )

    def kill(self, down: float) -> dict[str, Any]:
        """SIGKILL the running server (chaos); it starts again ``down`` seconds after its
        exit (0: after the usual back-off). Raises RequestRefused when none runs."""
        if not 0 <= down <= 3600:
            raise RequestRefused("--down must be between 0 and 3600 seconds")
        process = self.process
        if process is None or process.returncode is not None:
            raise RequestRefused(f"the embedded nats-server is {self.state.value}, not running")
        self._hold = down or None
        _kill(process)
        _log.warning("supervisor.chaos", action="nats_restart", pid=process.pid, down=down)
        return {"pid": process.pid, "url": self._launcher.url, "down": down}

    # -- waiters ------------------------------------------------------------------------

    async def _wait_exit(self, process: InstanceProcess) -> None:
        code = await process.wait()
        self._post(NatsExited(process, code))

    async def _wait_ready(self, process: InstanceProcess) -> None:
        ok = await self._launcher.wait_ready(self._ready_timeout)
        self._post(NatsReady(process, ok))

    def _spawn_task(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _kill(process: InstanceProcess) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGKILL)
