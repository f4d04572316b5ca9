"""The supervisor's state machine: slots change here, in ``handle(event)``, and nowhere else.

No NATS, no timers, no signal handlers: time comes from an injected ``Clock``,
processes from an ``InstanceLauncher`` (whose process factory a test replaces
with fakes), and the two things the loop asks of the outside world -- drop an
instance from the registry, close its health channel -- are functions handed
in. The embedded nats-server is kept by a ``NatsKeeper`` this core hands its
events to. ``supervisor.Supervisor`` is the shell around it: it owns the NATS
connection, the registry watcher, the ticker, the health prober and the control
socket, and turns what they see into events for this core.

One slot's life (states as ``cellwork status`` prints them)::

    STARTING --SERVING answer--> SERVING <--> NOT_SERVING
       |  no SERVING within startup_timeout (paused while NATS is down), or,
       |  having served, no answer at all for hang_timeout: SIGKILL
       v
    exited (or failed to start), not asked to stop
        --> BACKOFF --backoff(failures) later--> STARTING
    scaled away, retired by a rolling restart, or cell draining
        --> DRAINING (SIGTERM; SIGKILL after stop_grace) --exited--> STOPPED

A rolling restart (``runtime.rollout``) adds a slot's next generation beside it and
retires the old one once the new one serves; ``advance`` runs after every event.

The supervisor probes liveness, not readiness: an instance that answers
NOT_SERVING (draining, degraded while a dependency is away) is alive and kept.

No event takes the cell down: ``handle`` logs what one handler raises
(``supervisor.handler_failed``) and goes on; a failed start is a crash.
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
    KillRequested,
    NatsExited,
    NatsReady,
    NatsRestartRequested,
    PauseRequested,
    ProbeResult,
    RegistryChanged,
    RequestRefused,
    RestartRequested,
    Scaled,
    ScaleRequested,
    SignalReceived,
    SupervisorEvent,
    Tick,
)
from cellwork.runtime.nats_keeper import NatsKeeper
from cellwork.runtime.processes import InstanceLauncher, InstanceProcess
from cellwork.runtime.rollout import Rollouts
from cellwork.runtime.slots import Slot, SlotState

_log = get_logger("cellwork.supervisor")

MAX_REPLICAS = 64  # the cell file's bound for a service's replicas
MAX_PAUSE = 3600.0  # seconds ``cellwork chaos pause`` may stop an instance for

Deregister = Callable[[str, str], Awaitable[None]]
"""``await deregister(service, instance_id)`` removes the instance's registry record."""
ForgetHealth = Callable[[str], Awaitable[None]]
"""``await forget_health("host:port")`` closes the health channel to an address that is gone."""


class ScaleRefused(RequestRefused):
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
        nats: NatsKeeper | None = None,
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
        self.nats = nats  # None: the cell's NATS is external, not ours to keep
        self._clock = clock
        self._rng = rng
        self._waiters: set[asyncio.Task[None]] = set()
        self.rollouts = Rollouts()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Watch the embedded nats-server (already started) and start every replica the
        cell file asks for. A replica that fails to start waits out a back-off."""
        if self.nats is not None:
            self.nats.start()
        for name, service in self.spec.services.items():
            for index in range(service.replicas):
                await self._add_slot(name, index)

    async def close(self) -> None:
        """Kill every instance still alive, wait for each, and stop watching exits."""
        for slot in self.slots:
            process = slot.process
            if process is not None and process.returncode is None:
                try:
                    _send(process, signal.SIGKILL)
                except OSError as exc:  # not ours to kill (any more): do not wait for it
                    _log.warning(
                        "supervisor.kill_failed", instance=slot.instance_id, error=str(exc)
                    )
                    continue
                with contextlib.suppress(Exception):
                    await process.wait()
        for task in list(self._waiters):
            task.cancel()
        await asyncio.gather(*self._waiters, return_exceptions=True)
        if self.nats is not None:
            await self.nats.close()

    # -- reading ------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Every slot as ``cellwork status --json`` prints it, in cell file order."""
        now, wall = self._clock.monotonic(), self._clock.wall()
        order = list(self.spec.services)
        ordered = sorted(self.slots, key=lambda s: (order.index(s.service), s.index, s.generation))
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
        a ``Tick``): the loop should end. Never raises: what a handler raises is logged
        (``supervisor.handler_failed``) and answered to a waiting asker."""
        try:
            done = await self._dispatch(event)
            await self.rollouts.advance(self, draining=self.draining)
            return done
        except Exception as exc:
            _log.exception("supervisor.handler_failed", **_describe(event), error=repr(exc))
            reply = getattr(event, "reply", None)
            if isinstance(reply, asyncio.Future) and not reply.done():
                reply.set_exception(RuntimeError(f"the supervisor failed to act on it: {exc!r}"))
            return False

    async def _dispatch(self, event: SupervisorEvent) -> bool:
        match event:
            case Tick():
                return await self._on_tick()
            case Exited(slot, process, code):
                await self._on_exit(slot, process, code)
            case HealthChecked(slot, process, result):
                self._on_health(slot, process, result)
            case RegistryChanged(snapshot):
                self._on_registry(snapshot)
            case SignalReceived(signum):
                self._on_signal(signum)
            case ScaleRequested(service, replicas, reply):
                _answer(reply, await _attempt(lambda: self._scale(service, replicas)))
            case NatsExited(process, code):
                if self.nats is not None:
                    self.nats.on_exit(process, code)
            case NatsReady(process, ok):
                if self.nats is not None:
                    self.nats.on_ready(process, ok)
            case KillRequested(service, instance, reply):
                _answer(reply, await _attempt(lambda: self._chaos_kill(service, instance)))
            case PauseRequested(service, instance, seconds, reply):
                _answer(
                    reply, await _attempt(lambda: self._chaos_pause(service, instance, seconds))
                )
            case NatsRestartRequested(down, reply):
                _answer(reply, await _attempt(lambda: self._chaos_nats(down)))
            case RestartRequested(service, reply):
                _answer(reply, await _attempt(lambda: self._rolling_restart(service)))
            case _:
                assert_never(event)
        return False

    async def _on_tick(self) -> bool:
        if self.nats is not None:
            await self.nats.on_tick()
        for slot in list(self.slots):
            try:
                await self._tick_slot(slot)
            except Exception as exc:  # one slot's trouble must not stop the others' care
                _log.exception(
                    "supervisor.handler_failed",
                    kind="Tick",
                    instance=slot.instance_id,
                    error=repr(exc),
                )
        return self.draining and not any(slot.alive for slot in self.slots)

    def _startup_from(self, now: float) -> float:
        """Since when a starting instance's startup_timeout runs: instances wait for NATS
        to start, so the clock stops while it is down and starts over when it is back."""
        if self.nats is None:
            return 0.0
        return self.nats.up_since if self.nats.up else now

    async def _tick_slot(self, slot: Slot) -> None:
        now = self._clock.monotonic()
        sup = self.spec.supervisor
        if slot.process is not None and slot.alive:
            if slot.resume_at is not None and now >= slot.resume_at:
                slot.resume_at = None
                _send(slot.process, signal.SIGCONT)
                _log.info("supervisor.resumed", instance=slot.instance_id, pid=slot.pid)
            if slot.kill_at is not None and now >= slot.kill_at:
                _log.warning("supervisor.escalate_kill", instance=slot.instance_id)
                _send(slot.process, signal.SIGKILL)
                slot.kill_at = None
            elif slot.hung(
                now, sup.hang_timeout, sup.startup_timeout, startup_from=self._startup_from(now)
            ):
                since = slot.started_at if slot.serving_since is None else slot.last_answer
                _log.warning(
                    "supervisor.hung",
                    instance=slot.instance_id,
                    pid=slot.pid,
                    since=round(now - since, 3),
                )
                _send(slot.process, signal.SIGKILL)
            elif slot.serving_since is not None and now - slot.serving_since > sup.stable_after:
                slot.consecutive_failures = 0
        elif slot.state is SlotState.BACKOFF and not slot.stopping and now >= slot.next_start_at:
            await self._spawn(slot)

    async def _on_exit(self, slot: Slot, process: InstanceProcess, code: int) -> None:
        if slot.process is not process:
            return  # an older start of this slot, or news already acted on
        slot.process, slot.pid, slot.resume_at = None, None, None
        if self.nats is None or self.nats.up:  # NATS away: the TTL drops the record instead
            try:
                # At once: clients should not wait for the registry's TTL to drop it.
                await self._deregister(slot.service, slot.instance_id)
            except Exception as exc:
                _log.warning(
                    "supervisor.deregister_failed", instance=slot.instance_id, error=str(exc)
                )
        if slot.grpc_port:
            with contextlib.suppress(Exception):  # a channel that fails to close is gone anyway
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
            if (leaving or slot.superseded) and slot in self.slots:
                self.slots.remove(slot)
            return
        delay = self._back_off(slot)
        _log.warning(
            "supervisor.instance_exited",
            instance=slot.instance_id,
            code=code,
            restart_in=round(delay, 3),
        )

    def _back_off(self, slot: Slot) -> float:
        """Count a failure of ``slot`` and schedule its next start; returns the delay."""
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
        return delay

    def _on_health(self, slot: Slot, process: InstanceProcess, result: ProbeResult) -> None:
        if slot.process is not process or slot.stopping:
            return
        now = self._clock.monotonic()
        if result is ProbeResult.SERVING:
            slot.last_answer = now
            if slot.serving_since is None:
                slot.serving_since = now
                _log.info(
                    "supervisor.serving",
                    instance=slot.instance_id,
                    after=round(now - slot.started_at, 3),
                )
            slot.state = SlotState.SERVING
        elif slot.serving_since is not None:
            # It has served: NOT_SERVING is a live answer, silence is what hangs it.
            if result is ProbeResult.NOT_SERVING:
                slot.last_answer = now
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
        """Start the slot's instance; a start that fails counts as a crash (back-off)."""
        try:
            process = await self._launcher.launch(
                slot.service, slot.instance_id, slot.module, slot.env
            )
        except Exception as exc:
            slot.process, slot.pid = None, None
            delay = self._back_off(slot)
            _log.error(
                "supervisor.spawn_failed",
                instance=slot.instance_id,
                error=repr(exc),
                restart_in=round(delay, 3),
            )
            return
        now = self._clock.monotonic()
        slot.process, slot.pid = process, process.pid
        slot.state, slot.started_at, slot.started_wall = (
            SlotState.STARTING,
            now,
            self._clock.wall(),
        )
        slot.serving_since, slot.last_answer, slot.kill_at, slot.resume_at = None, 0.0, None, None
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
            if slot.resume_at is not None:  # paused by chaos: let it see the SIGTERM
                slot.resume_at = None
                _send(slot.process, signal.SIGCONT)
        elif slot.state is SlotState.BACKOFF:
            slot.state = SlotState.STOPPED

    async def _scale(self, service: str, replicas: int) -> Scaled:
        if service not in self.spec.services:
            raise ScaleRefused(f"unknown service {service!r}; the cell has {sorted(self.desired)}")
        if not 0 <= replicas <= MAX_REPLICAS:
            raise ScaleRefused(f"replicas must be between 0 and {MAX_REPLICAS}")
        if self.draining:
            raise ScaleRefused("the cell is draining")
        if self.rollouts.running(service):
            raise ScaleRefused(f"a rolling restart of {service} is under way")
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

    # -- rolling restarts -----------------------------------------------------------------

    async def _rolling_restart(self, service: str) -> dict[str, Any]:
        if service not in self.spec.services:
            raise RequestRefused(
                f"unknown service {service!r}; the cell has {sorted(self.desired)}"
            )
        if self.draining:
            raise RequestRefused("the cell is draining")
        mine = sorted(
            (s for s in self.slots if s.service == service and not s.stopping),
            key=lambda s: s.index,
        )
        return await self.rollouts.begin(service, mine, self)

    async def start_successor(self, old: Slot) -> Slot:
        """Start the next generation of ``old``'s slot beside it (a rollout's action)."""
        slot = Slot(old.service, old.index, old.module, old.env, generation=old.generation + 1)
        self.slots.append(slot)
        await self._spawn(slot)
        return slot

    def retire(self, slot: Slot) -> None:
        """Drain and stop ``slot`` for good; the slot goes when it has exited (a rollout's
        action)."""
        slot.superseded = True
        self._terminate(slot)
        if slot.process is None and slot in self.slots:
            self.slots.remove(slot)

    # -- chaos ----------------------------------------------------------------------------

    def _chaos_target(self, service: str, instance: str | None) -> tuple[Slot, InstanceProcess]:
        """The running slot a chaos request means; raises RequestRefused saying why not."""
        if service not in self.spec.services:
            raise RequestRefused(
                f"unknown service {service!r}; the cell has {sorted(self.desired)}"
            )
        if self.draining:
            raise RequestRefused("the cell is draining")
        mine = sorted(
            (s for s in self.slots if s.service == service), key=lambda s: (s.index, s.generation)
        )
        if instance is not None:
            named = [s for s in mine if s.instance_id == instance]
            if not named:
                ids = ", ".join(s.instance_id for s in mine) or "none"
                raise RequestRefused(f"{service} has no instance {instance!r} (it has {ids})")
            mine = named
        for slot in mine:
            if slot.process is not None and slot.alive and not slot.stopping:
                return slot, slot.process
        raise RequestRefused(f"no running instance of {instance or service} to act on")

    async def _chaos_kill(self, service: str, instance: str | None) -> dict[str, Any]:
        slot, process = self._chaos_target(service, instance)
        _send(process, signal.SIGKILL)
        _log.warning("supervisor.chaos", action="kill", instance=slot.instance_id, pid=process.pid)
        return {"service": service, "instance": slot.instance_id, "pid": process.pid}

    async def _chaos_pause(
        self, service: str, instance: str | None, seconds: float
    ) -> dict[str, Any]:
        if not 0 < seconds <= MAX_PAUSE:
            raise RequestRefused(f"--for must be more than 0 and at most {MAX_PAUSE:.0f} seconds")
        slot, process = self._chaos_target(service, instance)
        _send(process, signal.SIGSTOP)
        slot.resume_at = self._clock.monotonic() + seconds
        _log.warning(
            "supervisor.chaos",
            action="pause",
            instance=slot.instance_id,
            pid=process.pid,
            seconds=seconds,
        )
        return {
            "service": service,
            "instance": slot.instance_id,
            "pid": process.pid,
            "seconds": seconds,
        }

    async def _chaos_nats(self, down: float) -> dict[str, Any]:
        if self.nats is None:
            raise RequestRefused("the cell uses an external NATS: it is not the cell's to restart")
        return self.nats.kill(down)


async def _attempt(act: Callable[[], Awaitable[Any]]) -> Any | RequestRefused:
    """What ``act`` returns, or the RequestRefused it raises (anything else propagates)."""
    try:
        return await act()
    except RequestRefused as exc:
        return exc


def _answer(reply: asyncio.Future[Any], outcome: Any) -> None:
    if reply.done():  # the asker may have given up waiting
        return
    if isinstance(outcome, RequestRefused):
        reply.set_exception(outcome)
    else:
        reply.set_result(outcome)


def _describe(event: SupervisorEvent) -> dict[str, Any]:
    """Fields that name an event in a log line (never its future or process object)."""
    fields: dict[str, Any] = {"kind": type(event).__name__}
    slot = getattr(event, "slot", None)
    if isinstance(slot, Slot):
        fields["instance"] = slot.instance_id
    service = getattr(event, "service", None)
    if isinstance(service, str):
        fields["service"] = service
    return fields


def _send(process: InstanceProcess, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # exited since we last looked
        process.send_signal(signum)
