"""What the supervisor's loop acts on: one frozen value per kind of news.

Signal handlers, the ticker, the health prober, the registry watcher, process
waiters and the control channel each build one of these and post it to the
supervisor's queue; only the loop changes a slot. A test posts the same values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class HealthChecked:
    """``process`` of ``slot`` answered the health check SERVING (``ok``) or did not."""

    slot: Slot
    process: InstanceProcess
    ok: bool


@dataclass(frozen=True, slots=True)
class RegistryChanged:
    """The registry's live set now (keyed by registry key): where instances listen, who drains."""

    snapshot: Mapping[str, InstanceInfo]


@dataclass(frozen=True, slots=True)
class SignalReceived:
    """SIGINT or SIGTERM reached the supervisor: the first drains the cell, a second kills."""

    signum: int


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


SupervisorEvent = Tick | Exited | HealthChecked | RegistryChanged | SignalReceived | ScaleRequested
