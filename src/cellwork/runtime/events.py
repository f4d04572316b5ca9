"""What the supervisor's loop acts on: one frozen value per kind of news.

Signal handlers, the ticker, the health prober, the registry watcher, process
waiters and the control channel each build one of these and post it to the
supervisor's queue; only the loop changes a slot. A test posts the same values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cellwork.discovery.instance import InstanceInfo
from cellwork.runtime.processes import InstanceProcess
from cellwork.runtime.slots import Slot


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: restart what finished its back-off, kill what hung or outstayed its grace."""


@dataclass(frozen=True, slots=True)
class Exited:
    """``process``, started for ``slot``, exited with ``code`` (negative: killed by that signal).

    Carries the process so that news of an older start cannot touch the current one."""

    slot: Slot
    process: InstanceProcess
    code: int


class ProbeResult(StrEnum):
    """What one health check of an instance found."""

    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"  # answered, but not SERVING (draining, degraded, starting)
    NO_ANSWER = "NO_ANSWER"  # no answer within the timeout, or the connection refused


@dataclass(frozen=True, slots=True)
class HealthChecked:
    """``process`` of ``slot`` was asked the gRPC health question; ``result`` is what it said.

    The supervisor probes liveness: only NO_ANSWER counts against an instance that has
    served once; NOT_SERVING is an answer (the instance is alive, it knows it cannot serve)."""

    slot: Slot
    process: InstanceProcess
    result: ProbeResult


@dataclass(frozen=True, slots=True)
class RegistryChanged:
    """The registry's live set now (keyed by registry key): where instances listen, who drains."""

    snapshot: Mapping[str, InstanceInfo]


@dataclass(frozen=True, slots=True)
class SignalReceived:
    """SIGINT or SIGTERM reached the supervisor: the first drains the cell, a second kills."""

    signum: int


class RequestRefused(ValueError):
    """A control request the cell cannot act on (an unknown service, a bad count, the
    cell draining...): the message says why, and is what the asker sees."""


@dataclass(frozen=True, slots=True)
class Scaled:
    """The answer to a scale request: how many replicas ``service`` wanted before and now."""

    service: str
    before: int
    after: int


@dataclass(frozen=True, slots=True)
class ScaleRequested:
    """Run ``replicas`` instances of ``service``; the loop answers on ``reply``
    (a ``Scaled``, or ``ScaleRefused`` for an unknown service or a bad count)."""

    service: str
    replicas: int
    reply: asyncio.Future[Scaled]


@dataclass(frozen=True, slots=True)
class NatsExited:
    """The cell's embedded nats-server ``process`` exited with ``code``."""

    process: InstanceProcess
    code: int


@dataclass(frozen=True, slots=True)
class NatsReady:
    """The embedded nats-server ``process`` accepts connections (``ok``), or did not
    within its start timeout (not ``ok``: it is killed and started again)."""

    process: InstanceProcess
    ok: bool


@dataclass(frozen=True, slots=True)
class KillRequested:
    """``cellwork chaos kill``: SIGKILL one instance of ``service`` (``instance``, or the
    first alive); the loop answers on ``reply`` with what it did (or ``RequestRefused``)."""

    service: str
    instance: str | None
    reply: asyncio.Future[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PauseRequested:
    """``cellwork chaos pause``: SIGSTOP one instance of ``service`` now and SIGCONT it
    after ``seconds``; answered on ``reply``."""

    service: str
    instance: str | None
    seconds: float
    reply: asyncio.Future[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class NatsRestartRequested:
    """``cellwork chaos nats restart``: SIGKILL the embedded nats-server and start it again
    ``down`` seconds later (0: after the usual restart back-off); answered on ``reply``."""

    down: float
    reply: asyncio.Future[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RestartRequested:
    """``cellwork restart SERVICE --rolling``: replace the instances of ``service`` one at
    a time (``runtime.rollout``); answered on ``reply`` at once, with the rollout begun
    (its ``number``, to follow it in ``status``), or ``RequestRefused``."""

    service: str
    reply: asyncio.Future[dict[str, Any]]


SupervisorEvent = (
    Tick
    | Exited
    | HealthChecked
    | RegistryChanged
    | SignalReceived
    | ScaleRequested
    | NatsExited
    | NatsReady
    | KillRequested
    | PauseRequested
    | NatsRestartRequested
    | RestartRequested
)
