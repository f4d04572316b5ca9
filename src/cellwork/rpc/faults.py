"""Live faults: slow down, burn CPU in, or fail a share of an instance's calls, on request.

Every ``Service`` installs a ``FaultLayer`` as the innermost layer of its server chain
(just before the handler, inside every policy a test wants to see at work) and
declares its settings as the live group ``faults``, so that ``cellwork chaos
delay|fail|clear`` reach a whole service or one instance through the config bucket,
without a restart:

    <service>.faults.delay_ms      milliseconds added to every call (0: none)
    <service>.faults.cpu           true: burn delay_ms of CPU per call instead of
                                   sleeping, in 5 ms slices of the event loop's time,
                                   which lowers the instance's capacity (an overload
                                   without load)
    <service>.faults.fail_rate     the share of calls (0 to 1) that fail...
    <service>.faults.fail_code     ...with INTERNAL or UNAVAILABLE

No fault is ever active unless asked for. With none set, the layer costs one attribute
read and one call per RPC: it hands back the handler's own coroutine, adding no frame
of its own. Each injected fault counts in ``cellwork_faults_injected_total``; the
instance logs ``faults.on`` and ``faults.off`` when its faults change.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any, Literal

from grpc import aio
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from cellwork.errors import CellworkError, Internal, Unavailable
from cellwork.observability.logging import get_logger
from cellwork.rpc.shedding import Handler

_log = get_logger("cellwork.rpc.faults")

FAULTS_GROUP = "faults"
FAULTS_INJECTED = "cellwork_faults_injected_total"
MAX_DELAY_MS = 60_000.0

FaultCode = Literal["INTERNAL", "UNAVAILABLE"]
FAULT_ERRORS: dict[str, type[CellworkError]] = {"INTERNAL": Internal, "UNAVAILABLE": Unavailable}


class Faults(BaseModel):
    """The faults of a service or an instance: the live settings group ``faults``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    delay_ms: float = Field(
        0.0, ge=0, le=MAX_DELAY_MS, description="milliseconds added to every call (0: none)"
    )
    cpu: bool = Field(
        False,
        description="burn delay_ms of CPU per call (blocking the instance) instead of sleeping",
    )
    fail_rate: float = Field(0.0, ge=0, le=1, description="the share of calls that fail")
    fail_code: FaultCode = Field("INTERNAL", description="the status a failed call answers")

    @property
    def active(self) -> bool:
        """Whether any call is affected."""
        return self.delay_ms > 0 or self.fail_rate > 0


NO_FAULTS = Faults()


@cache
def faults_injected() -> Counter:
    """The process-wide counter of injected faults, by service and kind (``delay``,
    ``cpu``, ``fail``). Created on first use: a process has one, whatever its services."""
    return Counter(
        FAULTS_INJECTED,
        "Faults injected into calls on request (cellwork chaos delay|fail).",
        ["service", "kind"],
    )


CPU_SLICE = 0.005
"""Seconds of CPU a ``cpu`` fault burns before it lets the loop run something else."""


def burn_cpu(seconds: float) -> None:
    """Keep this thread busy for ``seconds`` of its own CPU time (blocks the loop, on purpose)."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


class FaultLayer:
    """A server ``Layer`` that injects the faults last applied (none at first).

    ``apply(faults)`` is the live group's apply: it takes effect on the next call.
    ``rng``, ``sleep`` and ``burn`` are where the layer draws, waits and burns (a test
    hands in its own).
    """

    def __init__(
        self,
        service: str,
        *,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        burn: Callable[[float], None] = burn_cpu,
    ) -> None:
        self.service = service
        self.faults = NO_FAULTS
        self._active: Faults | None = None  # read on every call: None is the fast path
        self._rng, self._sleep, self._burn = rng, sleep, burn
        counter = faults_injected()
        self._delayed = counter.labels(service, "delay")
        self._burnt = counter.labels(service, "cpu")
        self._failed = counter.labels(service, "fail")

    def apply(self, faults: Faults) -> None:
        """Inject ``faults`` from the next call on (``NO_FAULTS``: none)."""
        was = self._active
        self.faults = faults
        self._active = faults if faults.active else None
        if self._active is not None:
            _log.warning(
                "faults.on",
                service=self.service,
                delay_ms=faults.delay_ms,
                cpu=faults.cpu,
                fail_rate=faults.fail_rate,
                fail_code=faults.fail_code,
            )
        elif was is not None:
            _log.info("faults.off", service=self.service)

    def __call__(self, handler: Handler) -> Handler:
        def faulty(request: Any, context: aio.ServicerContext[Any, Any]) -> Awaitable[Any]:
            active = self._active
            if active is None:
                return handler(request, context)
            return self._inject(active, handler, request, context)

        return faulty

    async def _burn_in_slices(self, seconds: float) -> None:
        # Slices with the loop's turn between them, as a handler computing between awaits
        # does: calls then overlap, so the instance's in-flight work and latency grow
        # with its queue and its adaptive limit sheds. One block of CPU per call would
        # hold each call to its end before the next starts, leaving the queue in gRPC's
        # core, where no stage of the server sees it.
        whole, rest = divmod(seconds, CPU_SLICE)
        pieces = [CPU_SLICE] * int(whole) + ([rest] if rest > 1e-6 else [])
        for n, piece in enumerate(pieces):
            if n:
                await asyncio.sleep(0)
            self._burn(piece)

    async def _inject(
        self,
        faults: Faults,
        handler: Handler,
        request: Any,
        context: aio.ServicerContext[Any, Any],
    ) -> Any:
        if faults.delay_ms > 0:
            if faults.cpu:
                self._burnt.inc()
                await self._burn_in_slices(faults.delay_ms / 1000.0)
            else:
                self._delayed.inc()
                await self._sleep(faults.delay_ms / 1000.0)
        if faults.fail_rate > 0 and self._rng() < faults.fail_rate:
            self._failed.inc()
            raise FAULT_ERRORS[faults.fail_code](f"fault injected into {self.service}")
        return await handler(request, context)
