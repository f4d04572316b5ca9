"""Watch the registry and keep the live set of instances, in memory, current.

Static stability: the watcher trusts its last good view more than silence. An
entry leaves the set by age (no beat for a TTL) only while the registry is known
healthy; while it is not, the watcher holds every endpoint it has, and callers keep
calling them (their balancers still eject one that refuses connections).

How the watcher knows the registry is healthy, checked every ``probe_interval``:

1. the NATS connection is up (local state, no I/O);
2. its watch is the one made on this connection (nats-py's reconnect count has
   not moved since) and its task is alive: after a reconnection the server may
   have restarted, even with its store wiped, and the old ordered consumer with it;
3. the bucket exists and is the one the watch was made on (one JetStream stream
   lookup, whose creation time tells a re-created bucket from the old one).

When any fails, the watcher is unhealthy (``registry.unreachable``, the gauge
``cellwork_registry_held_endpoints`` shows how many endpoints it holds). As soon
as the connection is up it makes a new watch (re-creating a missing bucket),
whose replay of the current records is merged into what it holds: records
refresh their entries, entries without one stay. It is then healthy again
(``registry.recovered``).

An entry expires by age only when the probes vouched for the registry through
the whole TTL in which its beats were missing: the last probe is recent, and no
gap or failure broke the run of good probes since ``now - ttl``. A server that
shuts down slowly (its connections open, its requests hanging) stalls the probe
rather than failing it; a stalled probe vouches for nothing, so nothing expires
meanwhile, and after it instances get a fresh TTL to beat again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cellwork.discovery.instance import InstanceInfo, safe_token
from cellwork.discovery.registry import Registry
from cellwork.observability.logging import get_logger
from cellwork.observability.metrics import registry_held_endpoints
from cellwork.resilience.tasks import stop_task

_log = get_logger("cellwork.discovery.watcher")

Listener = Callable[[dict[str, InstanceInfo]], None]

# A replay is a handful of records; a server that takes longer is not healthy.
_REPLAY_TIMEOUT = 10.0


class RegistryWatcher:
    """The live instances of one service (or of all), updated from the bucket.

    While the registry is healthy an entry leaves the set when it is deleted or
    purged, or when it has not been refreshed for ``ttl`` seconds (checked every
    ``sweep_interval``): a crashed instance disappears within ``ttl +
    sweep_interval`` of its last beat even when the server sends no expiry marker.
    While it is not, the set is held as it was (see the module docstring).
    Listeners are called with the whole new set (keyed by registry key) on every
    change, on the event loop.
    """

    def __init__(
        self,
        registry: Registry,
        service: str | None = None,
        *,
        ttl: float | None = None,
        sweep_interval: float = 0.25,
        probe_interval: float | None = None,
    ) -> None:
        self._registry = registry
        self._pattern = f"{safe_token(service)}.*" if service else ">"
        self._label = service or "*"
        self._ttl = ttl if ttl is not None else registry.ttl
        self._sweep_interval = sweep_interval
        self._probe_interval = probe_interval or min(1.0, self._ttl / 3)
        self._entries: dict[str, tuple[InstanceInfo, float]] = {}
        self._listeners: list[Listener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._watch: Any = None
        self._follow_task: asyncio.Task[None] | None = None
        self._watch_epoch = -1  # the connection's reconnect count when the watch was made
        self._watch_bucket: datetime | None = None  # creation time of the bucket watched
        self._healthy = False
        # Monotonic times: of the last probe that found the registry healthy, and of the
        # start of the unbroken run of such probes (entries expire by age only inside it).
        self._confirmed = 0.0
        self._healthy_since = float("-inf")
        self._confirm_window = 2 * self._probe_interval + 0.5
        self._ready = asyncio.Event()
        self._changed = asyncio.Condition()
        self._held = registry_held_endpoints().labels(self._label)

    @property
    def healthy(self) -> bool:
        """Whether the registry was reachable and the watch alive at the last probe."""
        return self._healthy

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(snapshot)`` on every change (and once now if started)."""
        self._listeners.append(listener)
        if self._ready.is_set():
            listener(self.snapshot())

    def snapshot(self) -> dict[str, InstanceInfo]:
        """The live instances now, keyed by registry key."""
        return {key: info for key, (info, _seen) in self._entries.items()}

    def instances(self) -> list[InstanceInfo]:
        """The live instances now."""
        return [info for info, _seen in self._entries.values()]

    async def start(self) -> None:
        """Load the current set and start following changes (and probing the registry)."""
        await self._rewatch()
        self._healthy = True
        self._confirmed = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._sweep(), name=f"registry-sweep:{self._pattern}"),
            asyncio.create_task(self._probe(), name=f"registry-probe:{self._pattern}"),
        ]

    async def wait_until(
        self, predicate: Callable[[list[InstanceInfo]], bool], timeout: float
    ) -> list[InstanceInfo]:
        """Wait until ``predicate(instances)`` holds; raises TimeoutError after ``timeout``."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: predicate(self.instances())), timeout
            )
        return self.instances()

    # -- following the bucket ----------------------------------------------------------

    async def _rewatch(self) -> None:
        """Replace the watch with a new one and wait for its replay of the current set."""
        await self._stop_watch()
        await self._registry.ensure()
        epoch = self._registry.reconnects
        bucket = await self._registry.identity()
        watch = await self._registry.kv.watch(self._pattern)
        replayed = asyncio.Event()
        self._watch, self._watch_epoch, self._watch_bucket = watch, epoch, bucket
        self._follow_task = asyncio.create_task(
            self._follow(watch, replayed), name=f"registry-watch:{self._pattern}"
        )
        try:
            await asyncio.wait_for(replayed.wait(), _REPLAY_TIMEOUT)
        except BaseException:
            await self._stop_watch()
            raise
        self._set_ready()

    async def _stop_watch(self) -> None:
        task, self._follow_task = self._follow_task, None
        if task is not None:
            await stop_task(task)  # how a watch ended does not matter: a new one replaces it
        watch, self._watch = self._watch, None
        if watch is not None:
            with contextlib.suppress(Exception):  # its connection may be gone
                await watch.stop()

    async def _follow(self, watch: Any, replayed: asyncio.Event) -> None:
        while True:
            entry = await watch.updates(timeout=None)
            if entry is None:  # end of the initial replay
                replayed.set()
                continue
            key = entry.key
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                if self._entries.pop(key, None) is not None:
                    await self._notify()
            else:
                try:
                    info = InstanceInfo.from_json(entry.value)
                except ValueError:
                    _log.warning("registry.bad_record", key=key)
                    continue
                age = 0.0
                if entry.created is not None:
                    age = min(max(time.time() - entry.created.timestamp(), 0.0), self._ttl)
                previous = self._entries.get(key)
                self._entries[key] = (info, time.monotonic() - age)
                if previous is None or previous[0] != info:
                    await self._notify()
            if entry.delta == 0:
                replayed.set()

    # -- health and expiry -------------------------------------------------------------

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval)
            problem = await self._problem()
            if problem is None:
                now = time.monotonic()
                if now - self._confirmed > self._confirm_window:  # a stalled probe: a gap
                    self._healthy_since = now
                self._confirmed = now
                continue
            if self._healthy:
                self._healthy = False
                self._held.set(len(self._entries))
                _log.warning(
                    "registry.unreachable",
                    watch=self._label,
                    reason=problem,
                    held=len(self._entries),
                )
            if not self._registry.connected:
                continue
            try:
                await self._rewatch()
            except Exception as exc:  # JetStream not back yet: the next probe tries again
                _log.debug("registry.rewatch_failed", watch=self._label, error=str(exc))
                continue
            self._healthy = True
            self._confirmed = self._healthy_since = time.monotonic()
            self._held.set(0)
            _log.info("registry.recovered", watch=self._label, held=len(self._entries))

    async def _problem(self) -> str | None:
        """Why the registry is not healthy now, or None when it is."""
        if not self._registry.connected:
            return "disconnected"
        if self._registry.reconnects != self._watch_epoch:
            return "reconnected"
        if self._follow_task is None or self._follow_task.done():
            return "watch ended"
        try:  # bounded: a server shutting down can leave the request hanging
            bucket = await asyncio.wait_for(self._registry.identity(), self._confirm_window)
        except Exception as exc:
            return f"bucket unavailable: {type(exc).__name__}"
        if bucket != self._watch_bucket:
            return "bucket re-created"
        return None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            now = time.monotonic()
            horizon = now - self._ttl
            if (
                not self._healthy
                or now - self._confirmed > self._confirm_window
                or self._healthy_since > horizon
            ):
                continue  # hold what we have: silence is not death while we cannot hear
            stale = [key for key, (_info, seen) in self._entries.items() if seen < horizon]
            for key in stale:
                del self._entries[key]
            if stale:
                _log.info("registry.expired", keys=stale)
                await self._notify()

    def _set_ready(self) -> None:
        if not self._ready.is_set():
            self._ready.set()
            snapshot = self.snapshot()
            for listener in self._listeners:
                listener(snapshot)

    async def _notify(self) -> None:
        if self._ready.is_set():
            snapshot = self.snapshot()
            for listener in self._listeners:
                listener(snapshot)
        async with self._changed:
            self._changed.notify_all()

    async def close(self) -> None:
        """Stop following the bucket (and probing it): returns once every task has ended."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            error = await stop_task(task)
            if error is not None:
                _log.warning(
                    "registry.watcher_task_failed", task=task.get_name(), error=repr(error)
                )
        await self._stop_watch()
        self._held.set(0)
