"""The supervisor of a local cell: start every instance, keep it healthy, drain on stop.

In the style of uvicorn's multiprocess supervisor: signal handlers, the
health prober, the registry watcher, process waiters and the control channel
only *post events* to one queue; one loop acts on them, so every change to a
slot happens in one place. Tests drive it the same way, by posting events.

What it does:
- starts a real ``nats-server`` (unless the cell names an external NATS);
- opens the registry bucket the instances use: ``registry_bucket``,
  ``registry_ttl`` and ``stream_replicas`` of ``ServiceSettings``, read from its
  own environment with the cell file's ``env:`` over it, as an instance reads them;
- starts each replica as ``python -m cellwork serve MODULE`` on free ports;
- restarts a process that exits, after a back-off with full jitter;
- kills and replaces an instance whose health check fails for ``hang_timeout``
  (or that does not reach SERVING within ``startup_timeout``);
- scales a service up or down while running;
- on the first SIGINT/SIGTERM drains: SIGTERM to every instance, SIGKILL to any
  still alive after ``stop_grace``, then stops NATS; a second signal kills at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import ValidationError

from cellwork.config.settings import ServiceSettings, settings_from_env
from cellwork.discovery.instance import InstanceInfo, InstanceStatus, safe_token
from cellwork.discovery.registry import Registry
from cellwork.discovery.watcher import RegistryWatcher
from cellwork.events.connection import connect_nats
from cellwork.observability.logging import get_logger
from cellwork.resilience.backoff import backoff
from cellwork.runtime.cellfile import CellFileError, CellSpec
from cellwork.runtime.control import CellState, control_subject
from cellwork.runtime.health import HealthProbe
from cellwork.runtime.nats_server import NatsServer
from cellwork.runtime.slots import Slot, SlotState

_log = get_logger("cellwork.supervisor")

Event = tuple[Any, ...]
TICK_SECONDS = 0.2
# Ports an instance picks for itself. The supervisor's own environment may name
# fixed ones (a container image sets CELLWORK_GRPC_PORT=50051 for its single
# instance); inherited, they would make every replica of the cell collide.
FREE_PORTS = {"CELLWORK_GRPC_PORT": "0", "CELLWORK_METRICS_PORT": "0"}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM this child if the supervisor dies, so nothing is orphaned."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def cell_settings(spec: CellSpec, environ: Mapping[str, str]) -> ServiceSettings:
    """The common settings every instance of the cell reads: ``environ`` with the cell
    file's cell-wide ``env:`` over it. Raises CellFileError when a value does not parse."""
    try:
        return settings_from_env(ServiceSettings, {**environ, **spec.env})
    except ValidationError as exc:
        raise CellFileError(
            f"the cell's env (over the environment) gives instances invalid settings:\n{exc}"
        ) from None


class Supervisor:
    """Runs one cell until drained. ``await run()``; post events to ``queue``.

    Raises CellFileError when the cell's settings do not parse."""

    def __init__(
        self,
        spec: CellSpec,
        *,
        base_dir: Path | None = None,
        nats_url: str | None = None,
        python: str = sys.executable,
    ) -> None:
        self.spec = spec
        self.state_dir = spec.resolved_state_dir(base_dir or Path.cwd()).resolve()
        self.nats_url = nats_url or spec.nats_url
        self.python = python
        self.settings = cell_settings(spec, os.environ)
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.slots: list[Slot] = []
        self.desired: dict[str, int] = {n: s.replicas for n, s in spec.services.items()}
        self.started = asyncio.Event()
        self.draining = False
        self._nats_server: NatsServer | None = None
        self._nc: NatsClient | None = None
        self._registry: Registry | None = None
        self._watcher: RegistryWatcher | None = None
        self._probe = HealthProbe(spec.supervisor.health_timeout)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Condition()

    # -- public -----------------------------------------------------------------

    def post(self, *event: Any) -> None:
        """Queue an event for the loop (safe from signal handlers and callbacks)."""
        self.queue.put_nowait(event)

    def status(self) -> list[dict[str, Any]]:
        """Every slot as ``cellwork status --json`` prints it."""
        now, wall = time.monotonic(), time.time()
        return [slot.describe(now, wall) for slot in self._ordered()]

    async def wait_until(self, predicate: Callable[[Supervisor], bool], timeout: float) -> None:
        """Wait until ``predicate(self)`` holds after some event; TimeoutError otherwise."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), timeout)

    async def run(self) -> None:
        """Start the cell, act on events until drained, then clean up everything."""
        try:
            await self._start()
            self.started.set()
            while True:
                event = await self.queue.get()
                done = await self._handle(event)
                async with self._changed:
                    self._changed.notify_all()
                if done:
                    break
        finally:
            await self._cleanup()

    # -- start and stop -----------------------------------------------------------

    async def _start(self) -> None:
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        if self.nats_url is None:
            # Started from this (the loop's) thread: PDEATHSIG is tied to the forking thread.
            self._nats_server = NatsServer(self.state_dir / "nats").start()
            self.nats_url = self._nats_server.url
            _log.info(
                "supervisor.nats_started",
                url=self.nats_url,
                monitor=self._nats_server.monitor_url,
                store=str(self.state_dir),
            )
        self._nc = await connect_nats(self.nats_url, name=f"supervisor/{self.spec.name}")
        s = self.settings
        self._registry = await Registry.open(
            self._nc, s.registry_bucket, s.registry_ttl, replicas=s.stream_replicas
        )
        self._watcher = RegistryWatcher(self._registry)
        self._watcher.add_listener(lambda snapshot: self.post("registry", snapshot))
        await self._watcher.start()
        for verb in ("status", "scale"):
            await self._nc.subscribe(control_subject(self.spec.name, verb), cb=self._on_control)
        monitor = self._nats_server.monitor_url if self._nats_server is not None else ""
        CellState(self.spec.name, self.nats_url, os.getpid(), str(self.state_dir), monitor).write(
            self.state_dir
        )
        for name, spec in self.spec.services.items():
            for index in range(spec.replicas):
                slot = Slot(name, index, spec.module, {**self.spec.env, **spec.env})
                self.slots.append(slot)
                await self._spawn(slot)
        self._own(self._ticker(), "ticker")
        self._own(self._health_loop(), "health")
        _log.info("supervisor.started", cell=self.spec.name, instances=len(self.slots))

    async def _cleanup(self) -> None:
        for slot in self.slots:
            if slot.alive:
                _kill(slot, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await slot.process.wait()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._probe.close()
        if self._watcher is not None:
            await self._watcher.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        if self._nats_server is not None:
            self._nats_server.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "cell.json").unlink()
        _log.info("supervisor.stopped", cell=self.spec.name)

    def _own(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- processes ----------------------------------------------------------------

    async def _spawn(self, slot: Slot) -> None:
        assert self.nats_url is not None
        env = {
            **os.environ,
            **FREE_PORTS,  # the cell file's env (in slot.env) may still fix them
            **slot.env,
            "CELLWORK_SERVICE": slot.service,
            "CELLWORK_INSTANCE_ID": slot.instance_id,
            "CELLWORK_NATS_URL": self.nats_url,
            "CELLWORK_STATE_DIR": str(self.state_dir),
            "CELLWORK_ZONE": self.spec.zone,
        }
        log_path = self.state_dir / "logs" / f"{slot.instance_id}.log"
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                self.python,
                "-m",
                "cellwork",
                "serve",
                slot.module,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the supervisor, which drains in order
                preexec_fn=_die_with_parent,
            )
        now = time.monotonic()
        slot.process, slot.pid = process, process.pid
        slot.state, slot.started_at, slot.started_wall = SlotState.STARTING, now, time.time()
        slot.serving_since, slot.last_healthy, slot.kill_at = None, 0.0, None
        slot.host, slot.grpc_port, slot.metrics_port = "", 0, 0
        self._own(self._wait_exit(slot, process), f"wait:{slot.instance_id}")
        _log.info("supervisor.spawned", instance=slot.instance_id, pid=process.pid)

    async def _wait_exit(self, slot: Slot, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self.post("exited", slot, process, code)

    def _terminate(self, slot: Slot, grace: float) -> None:
        slot.stopping = True
        if slot.alive:
            slot.state = SlotState.DRAINING
            slot.kill_at = time.monotonic() + grace
            _kill(slot, signal.SIGTERM)
        elif slot.state is SlotState.BACKOFF:
            slot.state = SlotState.STOPPED

    # -- the loop -----------------------------------------------------------------

    async def _handle(self, event: Event) -> bool:
        kind = event[0]
        if kind == "tick":
            return await self._on_tick()
        if kind == "exited":
            await self._on_exit(event[1], event[2], event[3])
        elif kind == "health":
            self._on_health(event[1], event[2], event[3])
        elif kind == "registry":
            self._on_registry(event[1])
        elif kind == "signal":
            self._on_signal(event[1])
        elif kind == "scale":
            future: asyncio.Future[Any] = event[3]
            try:
                future.set_result(await self._scale(event[1], event[2]))
            except ValueError as exc:
                future.set_exception(exc)
        return False

    def _on_signal(self, signum: int) -> None:
        if self.draining:
            _log.warning("supervisor.forced_stop", signal=signum)
            for slot in self.slots:
                slot.stopping = True
                _kill(slot, signal.SIGKILL)
            return
        _log.info("supervisor.draining", signal=signum, grace=self.spec.supervisor.stop_grace)
        self.draining = True
        for slot in self.slots:
            self._terminate(slot, self.spec.supervisor.stop_grace)

    async def _on_exit(self, slot: Slot, process: Any, code: int) -> None:
        if slot.process is not process:
            return
        slot.process, slot.pid = None, None
        if self._registry is not None:
            # Deregister at once: clients should not wait for the TTL.
            with contextlib.suppress(Exception):
                await self._registry.delete(slot.service, slot.instance_id)
        if slot.grpc_port:
            await self._probe.forget(f"{slot.host}:{slot.grpc_port}")
        if slot.stopping:
            slot.state = SlotState.STOPPED
            _log.info("supervisor.stopped_instance", instance=slot.instance_id, code=code)
            if not self.draining and slot.index >= self.desired.get(slot.service, 0):
                self.slots.remove(slot)
            return
        slot.consecutive_failures += 1
        slot.restarts += 1
        delay = backoff(
            slot.consecutive_failures,
            base=self.spec.supervisor.restart_backoff_base,
            cap=self.spec.supervisor.restart_backoff_max,
        )
        slot.state, slot.next_start_at = SlotState.BACKOFF, time.monotonic() + delay
        _log.warning(
            "supervisor.instance_exited",
            instance=slot.instance_id,
            code=code,
            restart_in=round(delay, 3),
        )

    def _on_health(self, slot: Slot, process: Any, ok: bool) -> None:
        if slot.process is not process or slot.stopping:
            return
        now = time.monotonic()
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

    def _on_registry(self, snapshot: dict[str, InstanceInfo]) -> None:
        for slot in self.slots:
            info = snapshot.get(f"{safe_token(slot.service)}.{safe_token(slot.instance_id)}")
            if info is None or info.pid != slot.pid:
                continue
            slot.host, slot.grpc_port, slot.metrics_port = (
                info.host,
                info.grpc_port,
                info.metrics_port,
            )
            if info.status is InstanceStatus.DRAINING:
                slot.state = SlotState.DRAINING

    async def _on_tick(self) -> bool:
        now = time.monotonic()
        sup = self.spec.supervisor
        for slot in list(self.slots):
            if slot.alive:
                if slot.kill_at is not None and now >= slot.kill_at:
                    _log.warning("supervisor.escalate_kill", instance=slot.instance_id)
                    _kill(slot, signal.SIGKILL)
                    slot.kill_at = None
                elif slot.hung(now, sup.hang_timeout, sup.startup_timeout):
                    _log.warning(
                        "supervisor.hung",
                        instance=slot.instance_id,
                        pid=slot.pid,
                        since=round(now - max(slot.last_healthy, slot.started_at), 3),
                    )
                    _kill(slot, signal.SIGKILL)
                elif slot.serving_since is not None and now - slot.serving_since > sup.stable_after:
                    slot.consecutive_failures = 0
            elif (
                slot.state is SlotState.BACKOFF and not slot.stopping and now >= slot.next_start_at
            ):
                await self._spawn(slot)
        return self.draining and not any(slot.alive for slot in self.slots)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.post("tick")

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.spec.supervisor.health_interval)
            targets = [(s, s.process) for s in self.slots if s.alive and s.grpc_port]
            results = await asyncio.gather(
                *(self._probe.check(f"{s.host}:{s.grpc_port}") for s, _p in targets)
            )
            for (slot, process), ok in zip(targets, results, strict=True):
                self.post("health", slot, process, ok)

    # -- scale and control ----------------------------------------------------------

    async def _scale(self, service: str, replicas: int) -> dict[str, Any]:
        spec = self.spec.services.get(service)
        if spec is None:
            raise ValueError(f"unknown service {service!r}; the cell has {sorted(self.desired)}")
        if not 0 <= replicas <= 64:
            raise ValueError("replicas must be between 0 and 64")
        if self.draining:
            raise ValueError("the cell is draining")
        before = self.desired[service]
        self.desired[service] = replicas
        mine = sorted((s for s in self.slots if s.service == service), key=lambda s: s.index)
        for slot in mine:
            if slot.index >= replicas and not slot.stopping:
                self._terminate(slot, self.spec.supervisor.stop_grace)
                if not slot.alive:
                    self.slots.remove(slot)
        used = {s.index for s in self.slots if s.service == service}
        for index in range(replicas):
            if index not in used:
                slot = Slot(service, index, spec.module, {**self.spec.env, **spec.env})
                self.slots.append(slot)
                await self._spawn(slot)
            else:
                existing = next(s for s in self.slots if s.service == service and s.index == index)
                if existing.stopping and not self.draining:
                    # Scaled down and up again before it exited: let it be replaced.
                    existing.stopping = False
                    existing.kill_at = time.monotonic()
        _log.info("supervisor.scaled", service=service, before=before, after=replicas)
        return {"service": service, "before": before, "after": replicas}

    async def _on_control(self, msg: Msg) -> None:
        verb = msg.subject.rsplit(".", 1)[-1]
        try:
            payload = json.loads(msg.data or b"{}")
            if verb == "status":
                result: Any = {"cell": self.spec.name, "instances": self.status()}
            else:
                future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                self.post("scale", str(payload["service"]), int(payload["replicas"]), future)
                result = await asyncio.wait_for(future, timeout=10)
            reply = {"result": result}
        except (KeyError, TypeError, ValueError) as exc:
            reply = {"error": str(exc)}
        await msg.respond(json.dumps(reply).encode())

    def _ordered(self) -> list[Slot]:
        order = list(self.spec.services)
        return sorted(self.slots, key=lambda s: (order.index(s.service), s.index))


def _kill(slot: Slot, signum: int) -> None:
    if slot.alive:
        with contextlib.suppress(ProcessLookupError):
            slot.process.send_signal(signum)
