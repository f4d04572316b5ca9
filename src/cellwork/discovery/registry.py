"""The service registry: a NATS JetStream key-value bucket of live instances.

Each instance puts ``<service>.<instance id>`` every heartbeat interval; the
bucket's max age (the TTL) drops an entry whose beats stopped, and watchers
drop it too once they have not seen it refreshed for a TTL, so a dead instance
leaves the live set even if no delete marker reaches a watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace

from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from cellwork.discovery.instance import InstanceInfo, InstanceStatus, safe_token
from cellwork.observability.logging import get_logger

_log = get_logger("cellwork.discovery")


class Registry:
    """Read and write instance records in the registry bucket."""

    def __init__(self, kv: KeyValue, ttl: float) -> None:
        self.kv = kv
        self.ttl = ttl

    @classmethod
    async def open(cls, nc: NatsClient, bucket: str, ttl: float, replicas: int = 1) -> Registry:
        """Bind to the bucket, creating it (memory storage, history 1, max age ``ttl``,
        ``replicas`` copies on a NATS cluster)."""
        js = nc.jetstream(timeout=5)
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    history=1,
                    ttl=ttl,
                    storage=StorageType.MEMORY,
                    replicas=replicas,
                )
            )
        return cls(kv, ttl)

    async def put(self, info: InstanceInfo) -> None:
        """Write (or refresh) an instance record."""
        await self.kv.put(info.key, info.to_json())

    async def delete(self, service: str, instance_id: str) -> None:
        """Remove an instance record (idempotent)."""
        with contextlib.suppress(KeyNotFoundError):
            await self.kv.delete(f"{safe_token(service)}.{safe_token(instance_id)}")

    async def list(self, service: str | None = None) -> list[InstanceInfo]:
        """Return the records in the bucket now (of one service, or all)."""
        pattern = f"{safe_token(service)}.*" if service else ">"
        watcher = await self.kv.watch(pattern, ignore_deletes=True)
        found: list[InstanceInfo] = []
        try:
            while True:
                entry = await watcher.updates(timeout=2.0)  # type: ignore[no-untyped-call]
                if entry is None:
                    break
                if entry.value:
                    with contextlib.suppress(ValueError):
                        found.append(InstanceInfo.from_json(entry.value))
                if entry.delta == 0:
                    break
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return found


class Registration:
    """Keeps one instance's record alive: put now, then every ``interval`` seconds.

    Lifecycle: ``start()``, ``set_status()`` when draining, ``close()`` deletes
    the record. A failed beat is logged and retried on the next tick; NATS
    reconnects on its own.
    """

    def __init__(self, registry: Registry, info: InstanceInfo, interval: float) -> None:
        self.registry = registry
        self.info = info
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Register now and start heartbeating."""
        if not self.info.started_at:
            self.info = replace(self.info, started_at=time.time())
        await self.registry.put(self.info)
        self._task = asyncio.create_task(self._beat(), name=f"heartbeat:{self.info.key}")
        _log.info("registry.registered", key=self.info.key, address=self.info.address)

    async def set_status(self, status: InstanceStatus) -> None:
        """Publish a new status at once (and in every later beat)."""
        self.info = self.info.with_status(status)
        await self.registry.put(self.info)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.registry.put(self.info)
            except Exception as exc:  # NATS down or reconnecting: next beat retries
                _log.warning("registry.heartbeat_failed", key=self.info.key, error=str(exc))

    async def close(self) -> None:
        """Stop heartbeating and delete the record."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.registry.delete(self.info.service, self.info.instance_id)
            _log.info("registry.deregistered", key=self.info.key)
        except Exception as exc:  # the TTL removes it anyway
            _log.warning("registry.deregister_failed", key=self.info.key, error=str(exc))
