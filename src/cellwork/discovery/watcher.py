"""Watch the registry and keep the live set of instances, in memory, current."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from cellwork.discovery.instance import InstanceInfo, safe_token
from cellwork.discovery.registry import Registry
from cellwork.observability.logging import get_logger

_log = get_logger("cellwork.discovery.watcher")

Listener = Callable[[dict[str, InstanceInfo]], None]


class RegistryWatcher:
    """The live instances of one service (or of all), updated from the bucket.

    An entry leaves the set when it is deleted or purged, or when it has not
    been refreshed for ``ttl`` seconds (checked every ``sweep_interval``): a
    crashed instance disappears within ``ttl + sweep_interval`` of its last beat
    even when the server sends no expiry marker. Listeners are called with the
    whole new set (keyed by registry key) on every change, on the event loop.
    """

    def __init__(
        self,
        registry: Registry,
        service: str | None = None,
        *,
        ttl: float | None = None,
        sweep_interval: float = 0.25,
    ) -> None:
        self._registry = registry
        self._pattern = f"{safe_token(service)}.*" if service else ">"
        self._ttl = ttl if ttl is not None else registry.ttl
        self._sweep_interval = sweep_interval
        self._entries: dict[str, tuple[InstanceInfo, float]] = {}
        self._listeners: list[Listener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._watch: Any = None
        self._ready = asyncio.Event()
        self._changed = asyncio.Condition()

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
        """Load the current set and start following changes."""
        self._watch = await self._registry.kv.watch(self._pattern)
        self._tasks = [
            asyncio.create_task(self._follow(), name=f"registry-watch:{self._pattern}"),
            asyncio.create_task(self._sweep(), name=f"registry-sweep:{self._pattern}"),
        ]
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def wait_until(
        self, predicate: Callable[[list[InstanceInfo]], bool], timeout: float
    ) -> list[InstanceInfo]:
        """Wait until ``predicate(instances)`` holds; raises TimeoutError after ``timeout``."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: predicate(self.instances())), timeout
            )
        return self.instances()

    async def _follow(self) -> None:
        while True:
            entry = await self._watch.updates(timeout=None)
            if entry is None:  # end of the initial replay
                self._set_ready()
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
                self._set_ready()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            horizon = time.monotonic() - self._ttl
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
        """Stop following the bucket."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._watch is not None:
            with contextlib.suppress(Exception):
                await self._watch.stop()
            self._watch = None
