"""The supervisor's state machine: slots change here, in ``handle(event)``, and nowhere else.

No NATS, no timers, no signal handlers: time comes from an injected ``Clock``,
processes from an ``InstanceLauncher`` (whose process factory a test replaces
with fakes), and the two things the loop asks of the outside world -- drop an
instance from the registry, close its health channel -- are functions handed
in. ``supervisor.Supervisor`` is the shell around it: it owns NATS, the
registry watcher, the ticker, the health prober and the control channel, and
turns what they see into events for this core.

One slot's life (states as ``cellwork status`` prints them)::

    STARTING --SERVING answer--> SERVING <--> NOT_SERVING
       |  no SERVING within startup_timeout, or none for hang_timeout: SIGKILL
       v
    exited, not asked to stop --> BACKOFF --backoff(failures) later--> STARTING
    scaled away or cell draining --> DRAINING (SIGTERM; SIGKILL after stop_grace)
                                     --exited--> STOPPED
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, assert_never

from cellwork.discovery.instance import InstanceInfo, InstanceStatus, safe_token
from cellwork.observability.logging import get_logger
from cellwork.resilience.backoff import backoff
from cellwork.runtime.cellfile import CellSpec
from cellwork.runtime.events import (
    Exited,
    HealthChecked,
    RegistryChanged,
    Scaled,
    ScaleRequested,
    SignalReceived,
    SupervisorEvent,
    Tick,
)
from cellwork.runtime.processes import InstanceLauncher, InstanceProcess
from cellwork.runtime.slots import Slot, SlotState

_log = get_logger("cellwork.supervisor")

MAX_REPLICAS = 64  # the cell file's bound for a service's replicas

Deregister = Callable[[str, str], Awaitable[None]]
"""``await deregister(service, instance_id)`` removes the instance's registry record."""
ForgetHealth = Callable[[str], Awaitable[None]]
"""``await forget_health("host:port")`` closes the health channel to an address that is gone."""


class ScaleRefused(ValueError):
    """A scale request names an unknown service or a count outside 0..64, or the cell drains."""


@dataclass(frozen=True, slots=True)
class Clock:
    """Where the supervisor reads the time: ``monotonic`` for every deadline, ``wall``
    only to record when an instance started."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


SYSTEM_CLOCK = Clock()


class SupervisorCore:
    """The slots of one cell and what to do about each event. Not thread-safe: one
    loop calls ``start()``, then ``handle()`` per event, then ``close()``.

    Owns one task per started process that waits for its exit and posts ``Exited``.
    """

    def __init__(
        self,
        spec: CellSpec,
        launcher: InstanceLauncher,
        *,
        deregister: Deregister,
        forget_health: ForgetHealth,
        post: Callable[[SupervisorEvent], None],
        clock: Clock = SYSTEM_CLOCK,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.spec = spec
        self.slots: list[Slot] = []
        self.desired: dict[str, int] = {n: s.replicas for n, s in spec.services.items()}
        self.draining = False
        self._launcher = launcher
        self._deregister = deregister
        self._forget_health = forget_health
        self._post = post
        self._clock = clock
        self._rng = rng
        self._waiters: set[asyncio.Task[None]] = set()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start every replica the cell file asks for."""
        for name, service in self.spec.services.items():
            for index in range(service.replicas):
                await self._add_slot(name, index)

    async def close(self) -> None:
        """Kill every instance still alive, wait for each, and stop watching exits."""
        for slot in self.slots:
            process = slot.process
            if process is not None and process.returncode is None:
                _send(process, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await process.wait()
        for task in list(self._waiters):
            task.cancel()
        await asyncio.gather(*self._waiters, return_exceptions=True)

    # -- reading ------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Every slot as ``cellwork status --json`` prints it, in cell file order."""
        now, wall = self._clock.monotonic(), self._clock.wall()
        order = list(self.spec.services)
        ordered = sorted(self.slots, key=lambda s: (order.index(s.service), s.index))
        return [slot.describe(now, wall) for slot in ordered]

    def health_targets(self) -> list[tuple[Slot, InstanceProcess, str]]:
        """The running instances whose address is known: (slot, its process, host:port)."""
        return [
            (slot, slot.process, f"{slot.host}:{slot.grpc_port}")
            for slot in self.slots
            if slot.process is not None and slot.alive and slot.grpc_port
        ]

    # -- the loop -----------------------------------------------------------------------

    async def handle(self, event: SupervisorEvent) -> bool:
        """Act on one event. True once the cell drains and no instance is alive (seen on
        a ``Tick``): the loop should end."""
        match event:
            case Tick():
                return await self._on_tick()
            case Exited(slot, process, code):
                await self._on_exit(slot, process, code)
            case HealthChecked(slot, process, ok):
                self._on_health(slot, process, ok)
            case RegistryChanged(snapshot):
                self._on_registry(snapshot)
            case SignalReceived(signum):
                self._on_signal(signum)
            case ScaleRequested(service, replicas, reply):
                try:
                    scaled = await self._scale(service, replicas)
                except ScaleRefused as exc:
                    if not reply.done():  # the asker may have given up waiting
                        reply.set_exception(exc)
                else:
                    if not reply.done():
                        reply.set_result(scaled)
            case _:
                assert_never(event)
        return False

    async def _on_tick(self) -> bool:
        now = self._clock.monotonic()
        sup = self.spec.supervisor
        for slot in list(self.slots):
            if slot.process is not None and slot.alive:
                if slot.kill_at is not None and now >= slot.kill_at:
                    _log.warning("supervisor.escalate_kill", instance=slot.instance_id)
                    _send(slot.process, signal.SIGKILL)
                    slot.kill_at = None
                elif slot.hung(now, sup.hang_timeout, sup.startup_timeout):
                    _log.warning(
                        "supervisor.hung",
                        instance=slot.instance_id,
                        pid=slot.pid,
                        since=round(now - max(slot.last_healthy, slot.started_at), 3),
                    )
                    _send(slot.process, signal.SIGKILL)
                elif slot.serving_since is not None and now - slot.serving_since > sup.stable_after:
                    slot.consecutive_failures = 0
            elif (
                slot.state is SlotState.BACKOFF and not slot.stopping and now >= slot.next_start_at
            ):
                await self._spawn(slot)
        return self.draining and not any(slot.alive for slot in self.slots)

    async def _on_exit(self, slot: Slot, process: InstanceProcess, code: int) -> None:
        if slot.process is not process:
            return  # an older start of this slot, or news already acted on
        slot.process, slot.pid = None, None
        try:
            # At once: clients should not wait for the registry's TTL to drop it.
            await self._deregister(slot.service, slot.instance_id)
        except Exception as exc:  # NATS away: the TTL drops the record instead
            _log.warning("supervisor.deregister_failed", instance=slot.instance_id, error=str(exc))
        if slot.grpc_port:
            await self._forget_health(f"{slot.host}:{slot.grpc_port}")
        if slot.replacing:
            # Scaled down and up again before it exited: a replacement, not a failure.
            slot.replacing = False
            _log.info("supervisor.stopped_instance", instance=slot.instance_id, code=code)
            await self._spawn(slot)
            return
        if slot.stopping:
            slot.state = SlotState.STOPPED
            _log.info("supervisor.stopped_instance", instance=slot.instance_id, code=code)
            leaving = not self.draining and slot.index >= self.desired.get(slot.service, 0)
            if leaving and slot in self.slots:
                self.slots.remove(slot)
            return
        slot.consecutive_failures += 1
        slot.restarts += 1
        sup = self.spec.supervisor
        delay = backoff(
            slot.consecutive_failures,
            base=sup.restart_backoff_base,
            cap=sup.restart_backoff_max,
            rng=self._rng,
        )
        slot.state, slot.next_start_at = SlotState.BACKOFF, self._clock.monotonic() + delay
        _log.warning(
            "supervisor.instance_exited",
            instance=slot.instance_id,
            code=code,
            restart_in=round(delay, 3),
        )

    def _on_health(self, slot: Slot, process: InstanceProcess, ok: bool) -> None:
        if slot.process is not process or slot.stopping:
            return
        now = self._clock.monotonic()
        if ok:
            slot.last_healthy = now
            if slot.serving_since is None:
                slot.serving_since = now
                _log.info(
                    "supervisor.serving",
                    instance=slot.instance_id,
                    after=round(now - slot.started_at, 3),
                )
            slot.state = SlotState.SERVING
        elif slot.serving_since is not None:
            slot.state = SlotState.NOT_SERVING

    def _on_registry(self, snapshot: Mapping[str, InstanceInfo]) -> None:
        for slot in self.slots:
            info = snapshot.get(f"{safe_token(slot.service)}.{safe_token(slot.instance_id)}")
            if info is None or info.pid != slot.pid:
                continue  # not registered yet, or a record left by an earlier start
            slot.host, slot.grpc_port, slot.metrics_port = (
                info.host,
                info.grpc_port,
                info.metrics_port,
            )
            if info.status is InstanceStatus.DRAINING:
                slot.state = SlotState.DRAINING

    def _on_signal(self, signum: int) -> None:
        if self.draining:
            _log.warning("supervisor.forced_stop", signal=signum)
            for slot in self.slots:
                slot.stopping = True
                if slot.process is not None and slot.alive:
                    _send(slot.process, signal.SIGKILL)
            return
        _log.info("supervisor.draining", signal=signum, grace=self.spec.supervisor.stop_grace)
        self.draining = True
        for slot in self.slots:
            self._terminate(slot)

    # -- acting on slots ----------------------------------------------------------------

    async def _add_slot(self, service: str, index: int) -> None:
        spec = self.spec.services[service]
        slot = Slot(service, index, spec.module, {**self.spec.env, **spec.env})
        self.slots.append(slot)
        await self._spawn(slot)

    async def _spawn(self, slot: Slot) -> None:
        process = await self._launcher.launch(slot.service, slot.instance_id, slot.module, slot.env)
        now = self._clock.monotonic()
        slot.process, slot.pid = process, process.pid
        slot.state, slot.started_at, slot.started_wall = (
            SlotState.STARTING,
            now,
            self._clock.wall(),
        )
        slot.serving_since, slot.last_healthy, slot.kill_at = None, 0.0, None
        slot.host, slot.grpc_port, slot.metrics_port = "", 0, 0
        task = asyncio.create_task(self._wait_exit(slot, process), name=f"wait:{slot.instance_id}")
        self._waiters.add(task)
        task.add_done_callback(self._waiters.discard)
        _log.info("supervisor.spawned", instance=slot.instance_id, pid=process.pid)

    async def _wait_exit(self, slot: Slot, process: InstanceProcess) -> None:
        code = await process.wait()
        self._post(Exited(slot, process, code))

    def _terminate(self, slot: Slot) -> None:
        """Ask the slot's instance to drain (SIGTERM now, SIGKILL after stop_grace);
        a slot waiting out its back-off just stops."""
        slot.stopping = True
        if slot.process is not None and slot.alive:
            slot.state = SlotState.DRAINING
            slot.kill_at = self._clock.monotonic() + self.spec.supervisor.stop_grace
            _send(slot.process, signal.SIGTERM)
        elif slot.state is SlotState.BACKOFF:
            slot.state = SlotState.STOPPED

    async def _scale(self, service: str, replicas: int) -> Scaled:
        if service not in self.spec.services:
            raise ScaleRefused(f"unknown service {service!r}; the cell has {sorted(self.desired)}")
        if not 0 <= replicas <= MAX_REPLICAS:
            raise ScaleRefused(f"replicas must be between 0 and {MAX_REPLICAS}")
        if self.draining:
            raise ScaleRefused("the cell is draining")
        before = self.desired[service]
        self.desired[service] = replicas
        mine = sorted((s for s in self.slots if s.service == service), key=lambda s: s.index)
        for slot in mine:
            if slot.index >= replicas and not slot.stopping:
                self._terminate(slot)
                # A slot whose process is gone goes now; one whose exit is still to be
                # handled (even if the process has already died) goes with that exit.
                if slot.process is None:
                    self.slots.remove(slot)
        used = {s.index: s for s in self.slots if s.service == service}
        for index in range(replicas):
            existing = used.get(index)
            if existing is None:
                await self._add_slot(service, index)
            elif existing.stopping:
                # Scaled down and up again before it exited: kill it on the next tick and
                # start it anew when it has exited (not counted as a restart).
                existing.stopping = False
                existing.replacing = existing.process is not None
                existing.kill_at = self._clock.monotonic()
        _log.info("supervisor.scaled", service=service, before=before, after=replicas)
        return Scaled(service, before, replicas)


def _send(process: InstanceProcess, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # exited since we last looked
        process.send_signal(signum)
