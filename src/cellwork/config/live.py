"""An instance's live settings, kept current from the config bucket while it runs.

``LiveSettings`` is what ``Service`` runs for the groups it declared
(``service.live(...)``): on start it opens the config bucket (creating it if need
be), publishes each group's JSON Schema under ``<service>.<group>._schema`` (what
``cellwork config set`` validates against; when two versions of a service run side by
side, the last to publish wins, and each instance still checks values with its own
model), and watches ``<service>.>``: the watch's
replay of what is set now is applied before the instance serves, each later change as
it comes (``config.dynamic`` says how a value is layered and validated).

While NATS is away nothing changes: the instance keeps the values it applied. A guard
looks at the connection's local state every ``poll`` seconds (no I/O); once it is back
(a reconnection: the server may have restarted, even with its store wiped), or when
the watch ended, it re-creates the bucket if it is missing, publishes the schemas
again and makes a new watch, whose replay brings whatever changed meanwhile. A key
absent from the replay (a wiped store) changes nothing; a deleted one falls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from nats.aio.client import Client as NatsClient

from cellwork.config.bucket import ConfigBucket
from cellwork.config.dynamic import ConfigKey, LiveGroup, schema_key
from cellwork.discovery.instance import safe_token
from cellwork.observability.logging import get_logger
from cellwork.resilience.backoff import backoff
from cellwork.resilience.tasks import stop_task

_log = get_logger("cellwork.config")

_REPLAY_TIMEOUT = 10.0  # seconds: a replay is a few dozen keys; a slower server is not well
_DELETED = ("DEL", "PURGE")


class LiveSettings:
    """The live settings groups of one instance of ``service``, fed from the bucket.

    Lifecycle: ``add`` groups, ``start(nc, bucket, replicas)`` (raises what opening the
    bucket or the first replay raises), ``close()``. ``healthy`` says whether the watch
    is current.
    """

    def __init__(self, service: str, instance: str, *, poll: float = 0.25) -> None:
        self.service = service
        self.instance = instance
        self.groups: dict[str, LiveGroup[Any]] = {}
        self._poll = poll
        self._service_token = safe_token(service)
        self._instance_token = safe_token(instance)
        self._nc: NatsClient | None = None
        self._bucket: ConfigBucket | None = None
        self._watch: Any = None
        self._follow: asyncio.Task[None] | None = None
        self._guard: asyncio.Task[None] | None = None
        self._epoch = -1  # the connection's reconnect count when the watch was made

    @property
    def healthy(self) -> bool:
        """Whether the connection is up and the watch is the one made on it."""
        nc = self._nc
        return (
            nc is not None
            and bool(nc.is_connected)
            and int(nc.stats["reconnects"]) == self._epoch
            and self._follow is not None
            and not self._follow.done()
        )

    def add(self, group: LiveGroup[Any]) -> None:
        """Keep ``group`` current from start on; raises ValueError for a name already taken."""
        if group.name in self.groups:
            raise ValueError(f"{self.service} already has a live settings group {group.name!r}")
        if self._nc is not None:
            raise RuntimeError("declare live settings before start()")
        self.groups[group.name] = group

    async def start(self, nc: NatsClient, bucket: str, replicas: int = 1) -> None:
        """Open the bucket, publish the schemas, apply what is set now, keep watching."""
        self._nc = nc
        self._bucket = await ConfigBucket.open(nc, bucket, replicas)
        await self._rewatch(self._bucket)
        self._guard = asyncio.create_task(self._keep(), name=f"config-guard:{self.service}")

    async def close(self) -> None:
        """Stop watching (the values applied stay as they are)."""
        guard, self._guard = self._guard, None
        if guard is not None:
            await stop_task(guard)  # the guard catches its failures: it ends only cancelled
        await self._stop_watch()

    # -- the watch ----------------------------------------------------------------------

    async def _rewatch(self, bucket: ConfigBucket) -> None:
        await self._stop_watch()
        assert self._nc is not None  # set by start(), before any watch
        epoch = int(self._nc.stats["reconnects"])
        await bucket.ensure()
        await self._publish_schemas(bucket)
        watch = await bucket.kv.watch(f"{self._service_token}.>")
        replayed = asyncio.Event()
        self._watch = watch
        self._follow = asyncio.create_task(
            self._take_updates(watch, replayed), name=f"config-watch:{self.service}"
        )
        try:
            await asyncio.wait_for(replayed.wait(), _REPLAY_TIMEOUT)
        except BaseException:
            await self._stop_watch()
            raise
        self._epoch = epoch

    async def _stop_watch(self) -> None:
        task, self._follow = self._follow, None
        if task is not None:
            await stop_task(task)  # how a watch ended does not matter: a new one replaces it
        watch, self._watch = self._watch, None
        if watch is not None:
            with contextlib.suppress(Exception):  # its connection may be gone
                await watch.stop()

    async def _publish_schemas(self, bucket: ConfigBucket) -> None:
        for group in self.groups.values():
            key = schema_key(self.service, group.name)
            current = await bucket.get(key)
            if current is not None:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    if json.loads(current[0])["schema"] == group.schema:
                        continue  # unchanged: no revision for every start
            record = {"schema": group.schema, "instance": self.instance}
            await bucket.put(key, json.dumps(record).encode())

    async def _take_updates(self, watch: Any, replayed: asyncio.Event) -> None:
        while True:
            entry = await watch.updates(timeout=None)
            if entry is None:  # the end of the replay of what is set now
                replayed.set()
                continue
            self._take(entry.key, entry.value or b"", entry.operation in _DELETED)
            if entry.delta == 0:
                replayed.set()

    def _take(self, key: str, value: bytes, deleted: bool) -> None:
        try:
            parsed = ConfigKey.parse(key)
        except ValueError:
            _log.warning("config.bad_key", key=key)
            return
        if parsed.is_schema or parsed.service != self._service_token:
            return
        if parsed.instance is not None and parsed.instance != self._instance_token:
            return  # another instance's override
        group = self.groups.get(parsed.group)
        if group is None:
            return  # a group another version of the service declares
        mine = parsed.instance is not None
        if deleted:
            outcome = group.withdraw(parsed.field, instance=mine)
        else:
            outcome = group.offer(parsed.field, value, instance=mine)
        if outcome.applied:
            _log.info(
                "config.applied",
                key=key,
                group=group.name,
                value=group.value.model_dump(mode="json"),
            )
        elif outcome.refused is not None:
            _log.warning("config.refused", key=key, group=group.name, reason=outcome.refused)

    # -- the guard ----------------------------------------------------------------------

    async def _keep(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(
                self._poll
                if not failures
                else self._poll + backoff(failures, base=self._poll, cap=5.0)
            )
            nc, bucket = self._nc, self._bucket
            if nc is None or bucket is None or not nc.is_connected or self.healthy:
                continue  # away: keep what was applied; or all is well
            try:
                await self._rewatch(bucket)
            except Exception as exc:  # JetStream not back yet: try again after a back-off
                failures += 1
                if failures == 1:
                    _log.warning("config.watch_failed", service=self.service, error=repr(exc))
                continue
            _log.info("config.watch_restored", service=self.service, failures=failures)
            failures = 0
