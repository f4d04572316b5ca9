"""The supervisor of a local cell: start every instance, keep it healthy, drain on stop.

In the style of uvicorn's multiprocess supervisor: signal handlers, the ticker,
the health prober, the registry watcher, process waiters and the control
channel only *post events* (``runtime.events``) to one queue; one loop hands
each to ``SupervisorCore.handle``, so every change to a slot happens in one
place. This module is the shell around that core: it owns NATS, the registry
and its watcher, the ticker, the health loop and the control subscription.
Tests drive the core with fake processes and a fake clock, and this shell on a
real nats-server.

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
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import ValidationError

from cellwork.config.settings import ServiceSettings, settings_from_env
from cellwork.discovery.registry import Registry
from cellwork.discovery.watcher import RegistryWatcher
from cellwork.events.connection import connect_nats
from cellwork.observability.logging import get_logger
from cellwork.runtime.cellfile import CellFileError, CellSpec
from cellwork.runtime.control import CellState, control_subject
from cellwork.runtime.events import (
    HealthChecked,
    RegistryChanged,
    ScaleRequested,
    SupervisorEvent,
    Tick,
)
from cellwork.runtime.health import HealthProbe
from cellwork.runtime.nats_server import NatsServer
from cellwork.runtime.processes import InstanceLauncher, ProcessFactory, spawn_serve
from cellwork.runtime.supervisor_core import SYSTEM_CLOCK, Clock, SupervisorCore

_log = get_logger("cellwork.supervisor")

TICK_SECONDS = 0.2
SCALE_REPLY_TIMEOUT = 10.0  # seconds a control request waits for the loop's answer


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
    """Runs one cell until drained: ``await run()``; ``post()`` events to it.

    ``environ`` is the environment instances inherit (default: this process's);
    ``processes`` starts them (default: real ``cellwork serve`` processes);
    ``clock`` is where every deadline reads the time. Raises CellFileError when the
    cell's settings do not parse.
    """

    def __init__(
        self,
        spec: CellSpec,
        *,
        base_dir: Path | None = None,
        nats_url: str | None = None,
        environ: Mapping[str, str] = os.environ,
        processes: ProcessFactory = spawn_serve,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.spec = spec
        self.state_dir = spec.resolved_state_dir(base_dir or Path.cwd()).resolve()
        self.nats_url = nats_url or spec.nats_url
        self.settings = cell_settings(spec, environ)
        self.queue: asyncio.Queue[SupervisorEvent] = asyncio.Queue()
        self.started = asyncio.Event()
        self._environ = environ
        self._processes = processes
        self._clock = clock
        self._probe = HealthProbe(spec.supervisor.health_timeout)
        self._core: SupervisorCore | None = None  # exists while run() runs, and after
        self._changed = asyncio.Condition()

    # -- public -----------------------------------------------------------------------

    def post(self, event: SupervisorEvent) -> None:
        """Queue an event for the loop (safe from signal handlers and callbacks)."""
        self.queue.put_nowait(event)

    def status(self) -> list[dict[str, Any]]:
        """Every slot as ``cellwork status --json`` prints it (none before ``run()``)."""
        return [] if self._core is None else self._core.status()

    async def wait_until(self, predicate: Callable[[Supervisor], bool], timeout: float) -> None:
        """Wait until ``predicate(self)`` holds after some event; TimeoutError otherwise."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), timeout)

    async def run(self) -> None:
        """Start the cell, act on events until it has drained, then stop all it started.

        Sets ``started`` once every instance was launched. Raises what start-up raises
        (NATS unreachable, nats-server missing); cleans up either way."""
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(_log.info, "supervisor.stopped", cell=self.spec.name)
            stack.callback(self._remove_state_file)
            (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
            nats_url, monitor = self._start_nats(stack)
            nc = await connect_nats(nats_url, name=f"supervisor/{self.spec.name}")
            stack.push_async_callback(_close_quietly, nc)
            s = self.settings
            registry = await Registry.open(
                nc, s.registry_bucket, s.registry_ttl, replicas=s.stream_replicas
            )
            watcher = RegistryWatcher(registry)
            stack.push_async_callback(watcher.close)
            watcher.add_listener(lambda snapshot: self.post(RegistryChanged(snapshot)))
            await watcher.start()
            stack.push_async_callback(self._probe.close)
            launcher = InstanceLauncher(
                self._processes, self._environ, nats_url, self.state_dir, self.spec.zone
            )
            core = self._core = SupervisorCore(
                self.spec,
                launcher,
                deregister=registry.delete,
                forget_health=self._probe.forget,
                post=self.post,
                clock=self._clock,
            )
            stack.push_async_callback(core.close)
            for verb in ("status", "scale"):
                await nc.subscribe(control_subject(self.spec.name, verb), cb=self._on_control)
            CellState(self.spec.name, nats_url, os.getpid(), str(self.state_dir), monitor).write(
                self.state_dir
            )
            await core.start()
            _log.info("supervisor.started", cell=self.spec.name, instances=len(core.slots))
            async with asyncio.TaskGroup() as tasks:
                posters = [
                    tasks.create_task(self._ticker(), name="supervisor-ticker"),
                    tasks.create_task(self._health_loop(core), name="supervisor-health"),
                ]
                try:
                    self.started.set()
                    await self._act_on_events(core)
                finally:
                    for task in posters:
                        task.cancel()

    # -- the loop and what feeds it -----------------------------------------------------

    async def _act_on_events(self, core: SupervisorCore) -> None:
        while True:
            event = await self.queue.get()
            done = await core.handle(event)
            async with self._changed:
                self._changed.notify_all()
            if done:
                return

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.post(Tick())

    async def _health_loop(self, core: SupervisorCore) -> None:
        while True:
            await asyncio.sleep(self.spec.supervisor.health_interval)
            targets = core.health_targets()
            results = await asyncio.gather(
                *(self._probe.check(address) for _slot, _process, address in targets)
            )
            for (slot, process, _address), ok in zip(targets, results, strict=True):
                self.post(HealthChecked(slot, process, ok))

    async def _on_control(self, msg: Msg) -> None:
        verb = msg.subject.rsplit(".", 1)[-1]
        try:
            payload = json.loads(msg.data or b"{}")
            if verb == "status":
                result: Any = {"cell": self.spec.name, "instances": self.status()}
            else:
                reply = asyncio.get_running_loop().create_future()
                self.post(ScaleRequested(str(payload["service"]), int(payload["replicas"]), reply))
                result = asdict(await asyncio.wait_for(reply, timeout=SCALE_REPLY_TIMEOUT))
            answer = {"result": result}
        except (KeyError, TypeError, ValueError) as exc:  # ScaleRefused is a ValueError
            answer = {"error": str(exc)}
        except TimeoutError:
            answer = {"error": f"the supervisor did not act on it within {SCALE_REPLY_TIMEOUT} s"}
        await msg.respond(json.dumps(answer).encode())

    # -- NATS and the state file ----------------------------------------------------------

    def _start_nats(self, stack: contextlib.AsyncExitStack) -> tuple[str, str]:
        """The cell's NATS URL and monitoring URL: the URL given (and no monitor), or an
        embedded server's, which ``stack`` stops."""
        if self.nats_url is not None:
            return self.nats_url, ""
        # Started from this (the loop's) thread: PDEATHSIG is tied to the forking thread.
        server = NatsServer(self.state_dir / "nats").start()
        stack.callback(server.stop)
        self.nats_url = server.url
        _log.info(
            "supervisor.nats_started",
            url=server.url,
            monitor=server.monitor_url,
            store=str(self.state_dir),
        )
        return server.url, server.monitor_url

    def _remove_state_file(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "cell.json").unlink()


async def _close_quietly(nc: NatsClient) -> None:
    with contextlib.suppress(Exception):  # closing a connection NATS already dropped
        await nc.close()
