"""A slot is one replica position of a service in the cell. Pure state, no I/O.

The slot outlives its processes: ``echo-1`` keeps its id, its restart count
and its back-off across crashes, while each start gets a fresh process.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cellwork.runtime.processes import InstanceProcess


class SlotState(StrEnum):
    """What the supervisor knows of a slot."""

    STARTING = "STARTING"  # process started, not yet answering SERVING
    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"  # served once; now answers NOT_SERVING, or does not answer
    DRAINING = "DRAINING"  # told to stop; finishing in-flight work
    BACKOFF = "BACKOFF"  # exited; waiting to be restarted
    STOPPED = "STOPPED"


@dataclass(eq=False)
class Slot:
    """One replica of a service and its current process."""

    service: str
    index: int
    module: str
    env: dict[str, str]
    state: SlotState = SlotState.STOPPED
    pid: int | None = None
    process: InstanceProcess | None = None  # the current start's process
    restarts: int = 0
    consecutive_failures: int = 0
    started_at: float = 0.0  # monotonic time of the current start
    started_wall: float = 0.0
    serving_since: float | None = None
    last_answer: float = 0.0  # monotonic time of the last health answer after SERVING once
    next_start_at: float = 0.0
    stopping: bool = False  # scale-down or cell drain: do not restart
    replacing: bool = False  # scaled down, then up again before it exited: start it anew
    generation: int = 0  # a rolling restart starts the next one beside the current
    superseded: bool = False  # retired by a rolling restart: the slot goes when it exits
    kill_at: float | None = None  # monotonic time to escalate to SIGKILL
    resume_at: float | None = None  # paused (SIGSTOP) by chaos: monotonic time to SIGCONT
    host: str = ""
    grpc_port: int = 0
    metrics_port: int = 0

    @property
    def instance_id(self) -> str:
        """``<service>-<index>``, then ``<service>-<index>-g<generation>`` after rolling
        restarts: the two generations of a slot live side by side for a moment."""
        base = f"{self.service}-{self.index}"
        return f"{base}-g{self.generation}" if self.generation else base

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def hung(
        self, now: float, hang_timeout: float, startup_timeout: float, *, startup_from: float = 0.0
    ) -> bool:
        """True when a running, non-stopping instance should be killed and replaced: it
        has not reached SERVING within ``startup_timeout`` (counted from its start, or
        from ``startup_from`` if later: when NATS came back), or, having served, has not
        answered a health check for ``hang_timeout``."""
        if not self.alive or self.stopping:
            return False
        if self.serving_since is None:
            return now - max(self.started_at, startup_from) > startup_timeout
        return now - max(self.last_answer, self.serving_since) > hang_timeout

    def describe(self, now: float, wall: float) -> dict[str, Any]:
        """The slot as ``cellwork status --json`` prints it."""
        return {
            "service": self.service,
            "id": self.instance_id,
            "pid": self.pid,
            "host": self.host,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "status": self.state.value,
            "restarts": self.restarts,
            "uptime": round(now - self.started_at, 1) if self.alive else 0.0,
        }
