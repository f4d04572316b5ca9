"""The config bucket: the NATS key-value bucket that holds live settings.

Stored on file (an acknowledged put survives a restart of NATS), with ``HISTORY``
revisions kept per key so that a change can be looked back on (and undone). Like the
registry's bucket it heals itself: ``ConfigBucket.open`` creates it when it is missing
(first start, or a NATS that came back with its store wiped), several instances
converging on one bucket; a put that finds no bucket re-creates it and puts again.
``ConfigBucket.bind`` only binds: a command that reads or writes settings never
creates a bucket no instance uses.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

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

from cellwork.config.dynamic import ConfigKey
from cellwork.discovery.registry import bucket_stream
from cellwork.errors import NotFound, Unavailable
from cellwork.observability.logging import get_logger

_log = get_logger("cellwork.config")

HISTORY = 16  # revisions kept per key (NATS allows at most 64)
_CONVERGE_ROUNDS = 8  # each looks before it acts: racing creators settle in two or three
_EMPTY_READS = 3  # times an empty read of the bucket is made before it is believed
_REQUEST_TIMEOUT = 5.0  # seconds: a put or a lookup answers in milliseconds


class ConfigBucket:
    """Read and write the config bucket. Methods raise what nats-py raises without a
    connection; ``open`` raises ``Unavailable`` when the bucket does not settle."""

    def __init__(
        self, js: JetStreamContext, kv: KeyValue, name: str, replicas: int, *, heal: bool = True
    ) -> None:
        self.js = js
        self.kv = kv
        self.name = name
        self.replicas = replicas
        self._heal = heal  # an instance's handle re-creates a lost bucket; a command's does not

    @classmethod
    async def open(cls, nc: NatsClient, name: str, replicas: int = 1) -> ConfigBucket:
        """Bind to the bucket, creating it (file storage, ``HISTORY`` revisions a key,
        ``replicas`` copies on a NATS cluster) when there is none."""
        js = nc.jetstream(timeout=_REQUEST_TIMEOUT)
        return cls(js, await _converge(js, name, replicas), name, replicas)

    @classmethod
    async def bind(cls, js: JetStreamContext, name: str) -> ConfigBucket:
        """Bind to an existing bucket; raises NotFound when there is none."""
        try:
            kv = await js.key_value(name)
        except BucketNotFoundError:
            raise NotFound(
                f"there is no config bucket {name!r}: no instance has published live settings"
            ) from None
        return cls(js, kv, name, 1, heal=False)

    async def ensure(self) -> KeyValue:
        """Make sure the bucket exists (re-create it if the server lost it)."""
        self.kv = await _converge(self.js, self.name, self.replicas)
        return self.kv

    async def put(self, key: str, value: bytes) -> int:
        """Write ``key``; returns its new revision. An opened bucket that went missing is
        re-created first; a bound one raises NotFound."""
        try:
            return await self.kv.put(key, value)
        except (NoStreamResponseError, NotFoundError):
            if not self._heal:
                raise NotFound(f"the config bucket {self.name!r} is gone") from None
            await self.ensure()
            return await self.kv.put(key, value)

    async def delete(self, key: str) -> None:
        """Delete ``key`` (a delete marker: watchers see it, history keeps what was)."""
        await self.kv.delete(key)

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """The current value of ``key`` and its revision, or None when unset or deleted."""
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value or b"", int(entry.revision or 0)

    async def current(self, pattern: str) -> dict[str, bytes]:
        """Every key matching ``pattern`` (``feed.>``) that holds a value now."""
        return await current_values(self.kv, pattern)

    async def schemas(self, service: str) -> dict[str, dict[str, Any]]:
        """The JSON Schema of each live settings group instances of ``service`` published."""
        found: dict[str, dict[str, Any]] = {}
        for key, value in (await self.current(f"{service}.*._schema")).items():
            try:
                found[ConfigKey.parse(key).group] = json.loads(value)["schema"]
            except (ValueError, KeyError, TypeError):
                _log.warning("config.bad_schema", key=key)
        return found


async def current_values(kv: KeyValue, pattern: str) -> dict[str, bytes]:
    """Every key of ``kv`` matching ``pattern`` that holds a value now, with its value.

    An empty answer is asked again (twice, 0.2 s apart): nats-py's watch signals "no more
    history" from the consumer's pending count, which can be read after the entries were
    sent and before they are handed over, so that on a loaded machine the signal comes
    first and a bucket full of keys reads as empty (a `chaos clear` under load said no
    instance had published live settings)."""
    for attempt in range(_EMPTY_READS):
        found = await _watched_values(kv, pattern)
        if found or attempt == _EMPTY_READS - 1:
            return found
        await asyncio.sleep(0.2)
    return {}


async def _watched_values(kv: KeyValue, pattern: str) -> dict[str, bytes]:
    watcher = await kv.watch(pattern, ignore_deletes=True)
    found: dict[str, bytes] = {}
    try:
        while True:
            entry = await watcher.updates(timeout=_REQUEST_TIMEOUT)  # type: ignore[no-untyped-call]
            if entry is None:
                break
            found[entry.key] = entry.value or b""
            if entry.delta == 0:
                break
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return found


async def _converge(js: JetStreamContext, name: str, replicas: int) -> KeyValue:
    """Look at the bucket and create it until one exists; return a handle on it."""
    for _round in range(_CONVERGE_ROUNDS):
        try:
            await js.stream_info(bucket_stream(name))
        except NotFoundError:
            try:
                kv = await js.create_key_value(
                    KeyValueConfig(
                        bucket=name, history=HISTORY, storage=StorageType.FILE, replicas=replicas
                    )
                )
            except BadRequestError:  # another instance created it first
                continue
            _log.info("config.bucket_created", bucket=name)
            return kv
        try:
            return await js.key_value(name)
        except BucketNotFoundError:  # deleted since we looked
            continue
    raise Unavailable(f"the config bucket {name!r} did not settle")
