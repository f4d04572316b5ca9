"""The service registry: a NATS JetStream key-value bucket of live instances.

Each instance puts ``<service>.<instance id>`` every heartbeat interval; the
bucket's max age (the TTL) drops an entry whose beats stopped, and watchers
drop it too once they have not seen it refreshed for a TTL, so a dead instance
leaves the live set even if no delete marker reaches a watcher.

The bucket heals itself. It is stored on file (an acknowledged put survives a
restart of NATS); ``Registry.ensure`` creates it when it is missing (a NATS that
came back with its store wiped) and replaces a memory bucket of the same name
(left by an older cellwork) with a file one. Several instances may heal at once:
each looks, acts, and looks again, so they converge on one file bucket; a record
written into a bucket another instance deleted in that race is written again by
its next beat. ``Registration`` puts its record at once when the connection comes
back, re-creating the bucket when a put finds none.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from datetime import datetime

from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyNotFoundError,
    NoStreamResponseError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from cellwork.discovery.instance import InstanceInfo, InstanceStatus, safe_token
from cellwork.errors import Unavailable
from cellwork.observability.logging import get_logger
from cellwork.resilience.backoff import backoff
from cellwork.resilience.tasks import stop_task

_log = get_logger("cellwork.discovery")

# Looks at the bucket before each step: two healers racing need two or three rounds.
_CONVERGE_ROUNDS = 8
# JetStream requests of the registry (a put, a stream lookup) answer in milliseconds.
_REQUEST_TIMEOUT = 5.0


def bucket_stream(bucket: str) -> str:
    """The JetStream stream behind a key-value bucket."""
    return f"KV_{bucket}"


class Registry:
    """Read and write instance records in the registry bucket, healing the bucket.

    ``open`` binds (or creates) the bucket; every method needs a connection and
    raises what nats-py raises without one (``Unavailable`` when the bucket cannot
    be made to converge).
    """

    def __init__(
        self, nc: NatsClient, kv: KeyValue, bucket: str, ttl: float, replicas: int = 1
    ) -> None:
        self.nc = nc
        self.kv = kv
        self.bucket = bucket
        self.ttl = ttl
        self.replicas = replicas
        self._js = nc.jetstream(timeout=_REQUEST_TIMEOUT)
        self._healing = asyncio.Lock()

    @classmethod
    async def open(cls, nc: NatsClient, bucket: str, ttl: float, replicas: int = 1) -> Registry:
        """Bind to the bucket, creating it (file storage, history 1, max age ``ttl``,
        ``replicas`` copies on a NATS cluster) or replacing a memory one."""
        kv = await _converge(nc.jetstream(timeout=_REQUEST_TIMEOUT), bucket, ttl, replicas)
        return cls(nc, kv, bucket, ttl, replicas)

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up now (local state, no I/O)."""
        return bool(self.nc.is_connected)

    @property
    def reconnects(self) -> int:
        """How many times the connection came back: a watch made before a change is stale."""
        return int(self.nc.stats["reconnects"])

    async def ensure(self) -> KeyValue:
        """Make sure the bucket exists on file (create it, or replace a memory one)."""
        async with self._healing:
            self.kv = await _converge(self._js, self.bucket, self.ttl, self.replicas)
            return self.kv

    async def identity(self) -> datetime | None:
        """When the bucket now on the server was created: a change means a new bucket.

        Raises BucketNotFoundError when there is none, or nats-py's error when the
        server does not answer in time."""
        try:
            info = await self._js.stream_info(bucket_stream(self.bucket))
        except NotFoundError as exc:
            raise BucketNotFoundError from exc
        return info.created

    async def put(self, info: InstanceInfo) -> None:
        """Write (or refresh) an instance record, re-creating a missing bucket first."""
        try:
            await self.kv.put(info.key, info.to_json())
        except (NoStreamResponseError, NotFoundError):
            await self.ensure()
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


async def _converge(js: JetStreamContext, bucket: str, ttl: float, replicas: int) -> KeyValue:
    """Look at the bucket and act until it is a file bucket; return a handle on it."""
    stream = bucket_stream(bucket)
    for _round in range(_CONVERGE_ROUNDS):
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            try:
                kv = await js.create_key_value(
                    KeyValueConfig(
                        bucket=bucket,
                        history=1,
                        ttl=ttl,
                        storage=StorageType.FILE,
                        replicas=replicas,
                    )
                )
            except BadRequestError:  # another instance created it first, maybe otherwise
                continue
            _log.info("registry.bucket_created", bucket=bucket)
            return kv
        if info.config.storage == StorageType.MEMORY:
            # Lost on every restart of NATS: replaced by a file bucket (records come back
            # with the next beats). Looked at again just before: another instance may have
            # replaced it meanwhile (the window narrows; a record a late delete takes comes
            # back with its instance's next beat).
            with contextlib.suppress(NotFoundError):
                again = await js.stream_info(stream)
                if again.config.storage == StorageType.MEMORY:
                    await js.delete_stream(stream)
            _log.warning("registry.bucket_replaced", bucket=bucket, storage="memory")
            continue
        try:
            return await js.key_value(bucket)
        except BucketNotFoundError:  # deleted since we looked
            continue
    raise Unavailable(f"the registry bucket {bucket!r} did not settle")


def _parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:port`` for IPv6); raises ValueError otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a host:port address: {address!r}")
    return host, int(port)


class Registration:
    """Keeps one instance's record alive: put now, then every ``interval`` seconds.

    Lifecycle: ``start()``, ``set_status()`` when draining, ``close()`` deletes
    the record. A failed beat is logged and retried after a back-off. The
    connection's local state is looked at every ``poll`` seconds (no I/O): when it
    comes back (after a restart of NATS, maybe with its store wiped) the record is
    put at once, re-creating the bucket, rather than at the next beat.

    ``advertise(address)`` publishes another address in the instance's record (a
    fault proxy standing in front of it, see ``cellwork.testing.faultproxy``):
    ``info`` stays what the instance is, ``published`` is what callers dial. Puts
    are serialized, so a beat that started before a change cannot land after it
    and put the old address back.
    """

    def __init__(
        self, registry: Registry, info: InstanceInfo, interval: float, *, poll: float = 0.1
    ) -> None:
        self.registry = registry
        self.info = info
        self.interval = interval
        self._poll = min(poll, interval)
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._away = False  # the connection was seen down since the last put
        self._advertised: tuple[str, int] | None = None
        self._putting = asyncio.Lock()

    @property
    def healthy(self) -> bool:
        """Whether the last put of the record succeeded and the connection is up."""
        return self._failures == 0 and not self._away and self.registry.connected

    @property
    def published(self) -> InstanceInfo:
        """The record as put in the registry: ``info`` at the advertised address, if any."""
        if self._advertised is None:
            return self.info
        host, port = self._advertised
        return replace(self.info, host=host, grpc_port=port)

    async def advertise(self, address: str | None) -> None:
        """Publish ``address`` (``host:port``) as where this instance answers, at once and
        in every later beat; ``None`` restores the instance's own address.

        Callers' balancers reopen their channel to the new address. Raises ValueError
        for a malformed address, and what ``Registry.put`` raises when NATS is away (the
        next beat publishes the change anyway)."""
        advertised = None if address is None else _parse_address(address)
        async with self._putting:
            self._advertised = advertised
            await self.registry.put(self.published)
        _log.info("registry.advertised", key=self.info.key, address=self.published.address)

    async def _put(self) -> None:
        async with self._putting:
            await self.registry.put(self.published)

    async def start(self) -> None:
        """Register now and start heartbeating."""
        if not self.info.started_at:
            self.info = replace(self.info, started_at=time.time())
        await self._put()
        self._task = asyncio.create_task(self._beat(), name=f"heartbeat:{self.info.key}")
        _log.info("registry.registered", key=self.info.key, address=self.info.address)

    async def set_status(self, status: InstanceStatus) -> None:
        """Publish a new status at once (and in every later beat)."""
        self.info = self.info.with_status(status)
        await self._put()

    async def _beat(self) -> None:
        epoch = self.registry.reconnects
        next_put = time.monotonic() + self.interval
        while True:
            await asyncio.sleep(self._poll)
            if not self.registry.connected:
                self._away = True  # puts now would only queue in nats-py's buffer
                continue
            now = time.monotonic()
            came_back = self._away or self.registry.reconnects != epoch
            if now < next_put and not came_back:
                continue
            epoch = self.registry.reconnects
            try:
                await self._put()
            except Exception as exc:  # NATS or JetStream not back yet: retry after a back-off
                self._failures += 1
                self._away = False
                next_put = now + backoff(self._failures, base=self._poll, cap=self.interval)
                _log.warning("registry.heartbeat_failed", key=self.info.key, error=str(exc))
                continue
            if came_back or self._failures:
                _log.info("registry.reregistered", key=self.info.key, failures=self._failures)
            self._failures = 0
            self._away = False
            next_put = now + self.interval

    async def close(self, timeout: float = 1.0) -> None:
        """Stop heartbeating and delete the record (skipped while NATS is away, bounded by
        ``timeout`` otherwise: the bucket's TTL removes the record anyway)."""
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task)  # the beat catches its failures: it ends only cancelled
        if not self.registry.connected:
            _log.warning("registry.deregister_failed", key=self.info.key, error="disconnected")
            return
        try:
            await asyncio.wait_for(
                self.registry.delete(self.info.service, self.info.instance_id), timeout
            )
            _log.info("registry.deregistered", key=self.info.key)
        except Exception as exc:  # the TTL removes it anyway
            error = str(exc) or type(exc).__name__
            _log.warning("registry.deregister_failed", key=self.info.key, error=error)
