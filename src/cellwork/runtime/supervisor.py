"""The supervisor of a local cell: start every instance, keep it healthy, drain on stop.

In the style of uvicorn's multiprocess supervisor: signal handlers, the ticker,
the health prober, the registry watcher, process waiters and the control
channel only *post events* (``runtime.events``) to one queue; one loop hands
each to ``SupervisorCore.handle``, so every change to a slot happens in one
place. This module is the shell around that core: it owns the NATS connection,
the registry and its watcher, the ticker, the health loop and the control socket.
Tests drive the core with fake processes and a fake clock, and this shell on a
real nats-server.

What it does:
- starts a real ``nats-server`` (unless the cell names an external NATS), a child
  that dies with the supervisor, and starts it again on the same port with the
  same store whenever it exits (``NatsKeeper``);
- opens the registry bucket the instances use: ``registry_bucket``,
  ``registry_ttl`` and ``stream_replicas`` of ``ServiceSettings``, read from its
  own environment with the cell file's ``env:`` over it, as an instance reads them;
- starts each replica as ``python -m cellwork serve MODULE`` on free ports;
- restarts a process that exits, after a back-off with full jitter;
- kills and replaces an instance that, having served, does not answer its health
  check for ``hang_timeout`` (or that does not reach SERVING within
  ``startup_timeout``, a clock that stops while NATS is down);
- scales a service up or down while running, replaces its instances one at a time
  (``cellwork restart SERVICE --rolling``, ``runtime.rollout``), and acts on
  ``cellwork chaos kill|pause|nats``;
- answers ``cellwork status``/``scale``/``restart``/``chaos`` on a Unix socket (``control``),
  so the cell can be steered while NATS is down;
- on the first SIGINT/SIGTERM drains: SIGTERM to every instance, SIGKILL to any
  still alive after ``stop_grace``, then stops NATS; a second signal kills at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cellwork.config.settings import ServiceSettings, settings_from_env
from cellwork.discovery.registry import Registry
from cellwork.discovery.watcher import RegistryWatcher
from cellwork.events.connection import connect_nats
from cellwork.observability.logging import get_logger
from cellwork.runtime.cellfile import CellFileError, CellSpec
from cellwork.runtime.control import CellState, ControlServer, control_socket_path
from cellwork.runtime.events import (
    HealthChecked,
    KillRequested,
    NatsRestartRequested,
    PauseRequested,
    RegistryChanged,
    RequestRefused,
    RestartRequested,
    ScaleRequested,
    SupervisorEvent,
    Tick,
)
from cellwork.runtime.health import HealthProbe
from cellwork.runtime.nats_keeper import NatsKeeper
from cellwork.runtime.nats_server import EmbeddedNats
from cellwork.runtime.processes import InstanceLauncher, ProcessFactory, spawn_serve
from cellwork.runtime.supervisor_core import SYSTEM_CLOCK, Clock, SupervisorCore

_log = get_logger("cellwork.supervisor")

TICK_SECONDS = 0.2
SCALE_REPLY_TIMEOUT = 10.0  # seconds a control request waits for the loop's answer
DEREGISTER_TIMEOUT = 2.0  # seconds the loop gives NATS to drop an exited instance's record
CLOSE_TIMEOUT = 5.0  # seconds the watcher and the NATS connection get to close on the way out


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

    def rollouts(self) -> list[dict[str, Any]]:
        """Each service's latest rolling restart, as ``status --json`` prints them."""
        return [] if self._core is None else self._core.rollouts.status()

    async def wait_until(self, predicate: Callable[[Supervisor], bool], timeout: float) -> None:
        """Wait until ``predicate(self)`` holds after some event; TimeoutError otherwise."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), timeout)

    async def run(self) -> None:
        """Start the cell, act on events until it has drained, then stop all it started.

        Sets ``started`` once every instance was launched. Raises what start-up raises
        (NATS unreachable, nats-server missing, the cell already running); cleans up
        either way."""
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(_log.info, "supervisor.stopped", cell=self.spec.name)
            stack.callback(self._remove_state_file)
            (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
            control = ControlServer(control_socket_path(self.state_dir), self._on_control)
            await control.start()  # first: a second `up` of a running cell stops here
            stack.push_async_callback(control.close)
            nats = await self._start_nats(stack)
            nats_url = self.nats_url
            assert nats_url is not None  # set by _start_nats
            nc = await connect_nats(nats_url, name=f"supervisor/{self.spec.name}")
            stack.push_async_callback(lambda: _bounded(nc.close(), "nats_connection"))
            s = self.settings
            registry = await Registry.open(
                nc, s.registry_bucket, s.registry_ttl, replicas=s.stream_replicas
            )
            watcher = RegistryWatcher(registry)
            stack.push_async_callback(lambda: _bounded(watcher.close(), "registry_watcher"))
            watcher.add_listener(lambda snapshot: self.post(RegistryChanged(snapshot)))
            await watcher.start()
            stack.push_async_callback(self._probe.close)
            launcher = InstanceLauncher(
                self._processes, self._environ, nats_url, self.state_dir, self.spec.zone
            )

            async def deregister(service: str, instance_id: str) -> None:
                await asyncio.wait_for(registry.delete(service, instance_id), DEREGISTER_TIMEOUT)

            keeper = None
            if nats is not None:
                keeper = NatsKeeper(
                    nats, post=self.post, monotonic=self._clock.monotonic, wall=self._clock.wall
                )
            core = self._core = SupervisorCore(
                self.spec,
                launcher,
                deregister=deregister,
                forget_health=self._probe.forget,
                post=self.post,
                nats=keeper,
                clock=self._clock,
            )
            stack.push_async_callback(core.close)
            CellState(
                self.spec.name,
                nats_url,
                os.getpid(),
                str(self.state_dir),
                nats.monitor_url if nats is not None else "",
                str(control.path),
                registry_bucket=s.registry_bucket,
                config_bucket=s.config_bucket,
            ).write(self.state_dir)
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
                *(self._probe.ask(address) for _slot, _process, address in targets)
            )
            for (slot, process, _address), result in zip(targets, results, strict=True):
                self.post(HealthChecked(slot, process, result))

    # -- the control socket ---------------------------------------------------------------

    def nats_status(self) -> dict[str, Any]:
        """The cell's NATS as ``cellwork status --json`` prints it under ``nats``."""
        core = self._core
        if core is not None and core.nats is not None:
            return core.nats.status()
        return {"embedded": False, "url": self.nats_url, "state": "external"}

    async def _on_control(self, verb: str, args: dict[str, Any]) -> Any:
        """Answer one control request (``control.Handler``): status at once, the others
        through the loop, as events. Raises RequestRefused for a bad request."""
        if verb == "status":
            return {
                "cell": self.spec.name,
                "nats": self.nats_status(),
                "instances": self.status(),
                "rollouts": self.rollouts(),
            }
        if self._core is None:
            raise RequestRefused("the cell is still starting")
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if verb == "scale":
            self.post(ScaleRequested(_text(args, "service"), _count(args, "replicas"), reply))
        elif verb == "kill":
            self.post(KillRequested(_text(args, "service"), _instance(args), reply))
        elif verb == "pause":
            seconds = _seconds(args, "seconds")
            self.post(PauseRequested(_text(args, "service"), _instance(args), seconds, reply))
        elif verb == "nats_restart":
            self.post(NatsRestartRequested(_seconds(args, "down", 0.0), reply))
        elif verb == "restart":
            self.post(RestartRequested(_text(args, "service"), reply))
        else:
            known = "status, scale, restart, kill, pause, nats_restart"
            raise RequestRefused(f"unknown verb {verb!r} (known: {known})")
        try:
            result = await asyncio.wait_for(reply, timeout=SCALE_REPLY_TIMEOUT)
        except TimeoutError:
            raise RequestRefused(
                f"the supervisor did not act on it within {SCALE_REPLY_TIMEOUT} s"
            ) from None
        return asdict(result) if verb == "scale" else result

    # -- NATS and the state file ----------------------------------------------------------

    async def _start_nats(self, stack: contextlib.AsyncExitStack) -> EmbeddedNats | None:
        """Start the embedded nats-server (stopped by ``stack``) unless the cell names an
        external NATS; sets ``nats_url`` either way."""
        if self.nats_url is not None:
            return None
        nats = EmbeddedNats(self.state_dir / "nats")
        await nats.start()
        stack.push_async_callback(nats.stop)
        self.nats_url = nats.url
        _log.info(
            "supervisor.nats_started",
            url=nats.url,
            monitor=nats.monitor_url,
            store=str(self.state_dir),
        )
        return nats

    def _remove_state_file(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "cell.json").unlink()


async def _bounded(closing: Awaitable[None], part: str) -> None:
    """Await a part's close for at most CLOSE_TIMEOUT: a NATS that is away (or came back
    as a new server) must not hold the cell's stop."""
    try:
        await asyncio.wait_for(closing, CLOSE_TIMEOUT)
    except TimeoutError:
        _log.warning("supervisor.close_timed_out", part=part, timeout=CLOSE_TIMEOUT)
    except Exception as exc:  # closing a connection NATS already dropped
        _log.info("supervisor.close_failed", part=part, error=repr(exc))


def _text(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise RequestRefused(f"{key!r} must be a non-empty string")
    return value


def _instance(args: dict[str, Any]) -> str | None:
    return None if args.get("instance") is None else _text(args, "instance")


def _count(args: dict[str, Any], key: str) -> int:
    value = args.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestRefused(f"{key!r} must be an integer")
    return value


def _seconds(args: dict[str, Any], key: str, default: float | None = None) -> float:
    value = args.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
        raise RequestRefused(f"{key!r} must be a number of seconds")
    return float(value)
