"""Registration, heartbeat expiry and deregistration, seen by a watcher on real NATS."""

import asyncio
import time

import pytest
from nats.js.api import KeyValueConfig, StorageType

from cellwork.discovery import InstanceInfo, InstanceStatus, Registration, RegistryWatcher
from cellwork.discovery.registry import Registry, bucket_stream
from cellwork.events.connection import connect_nats
from tests.waiting import BOUND, wait_until


def info(instance_id: str, port: int = 5000, service: str = "svc") -> InstanceInfo:
    return InstanceInfo(service=service, instance_id=instance_id, host="127.0.0.1", grpc_port=port)


async def test_watcher_sees_registration_status_changes_and_deregistration(registry):
    # A TTL far beyond the wait: the entry can only leave the set by its delete.
    watcher = RegistryWatcher(registry, "svc", ttl=10 * BOUND)
    await watcher.start()
    try:
        reg = Registration(registry, info("a"), interval=0.5)
        await reg.start()
        seen = await watcher.wait_until(lambda xs: len(xs) == 1, timeout=BOUND)
        assert seen[0].instance_id == "a" and seen[0].status is InstanceStatus.SERVING
        assert seen[0].started_at > 0

        await reg.set_status(InstanceStatus.DRAINING)
        await watcher.wait_until(
            lambda xs: xs and xs[0].status is InstanceStatus.DRAINING, timeout=BOUND
        )

        await reg.close()
        await watcher.wait_until(lambda xs: xs == [], timeout=BOUND)
    finally:
        await watcher.close()


async def test_heartbeats_keep_an_entry_alive_past_the_ttl(registry):
    # Eight beats a TTL: a busy machine may delay a few without the entry expiring.
    watcher = RegistryWatcher(registry, "svc", ttl=2.0, sweep_interval=0.1)
    await watcher.start()
    reg = Registration(registry, info("beating"), interval=0.25)
    await reg.start()
    try:
        await watcher.wait_until(lambda xs: len(xs) == 1, timeout=BOUND)
        # A second entry, written once after the first: when the watcher expires it, a
        # whole TTL has passed since the first was written, so only its beats kept it.
        await registry.put(info("silent"))
        await watcher.wait_until(lambda xs: len(xs) == 2, timeout=BOUND)
        await watcher.wait_until(
            lambda xs: "silent" not in {i.instance_id for i in xs}, timeout=BOUND
        )
        assert [i.instance_id for i in watcher.instances()] == ["beating"]
    finally:
        await reg.close()
        await watcher.close()


async def test_an_entry_whose_heartbeat_stops_expires_without_any_delete(nats_server):
    nc = await connect_nats(nats_server.url, name="test-expiry")
    # The bucket keeps entries far longer than the watcher's TTL: only the watcher's own
    # sweep can drop the entry, and the bucket still holds it afterwards.
    registry = await Registry.open(nc, "long_lived_registry", 10 * BOUND)
    watcher = RegistryWatcher(registry, "svc", ttl=1.0, sweep_interval=0.1)
    await watcher.start()
    try:
        written = time.monotonic()
        await registry.put(info("silent"))  # one beat, then nothing: a crashed instance
        await watcher.wait_until(lambda xs: len(xs) == 1, timeout=BOUND)
        await watcher.wait_until(lambda xs: xs == [], timeout=BOUND)
        assert time.monotonic() - written >= 1.0  # not before its TTL
        assert [i.instance_id for i in await registry.list("svc")] == ["silent"]
    finally:
        await watcher.close()
        await nc.close()


async def test_a_new_watcher_loads_existing_entries_and_ignores_other_services(registry):
    await registry.put(info("x1", service="svc"))
    await registry.put(info("y1", service="other"))
    await registry.kv.put("svc.garbage", b"not json")
    watcher = RegistryWatcher(registry, "svc")
    await watcher.start()
    try:
        assert [i.instance_id for i in watcher.instances()] == ["x1"]
        assert {i.instance_id for i in await registry.list()} == {"x1", "y1"}
    finally:
        await watcher.close()


async def test_an_existing_memory_bucket_is_replaced_by_a_file_bucket(nats_server):
    nc = await connect_nats(nats_server.url, name="test-replace")
    js = nc.jetstream()
    try:
        old = await js.create_key_value(
            KeyValueConfig(bucket="old_registry", history=1, ttl=3.0, storage=StorageType.MEMORY)
        )
        await old.put("svc.stale", info("stale").to_json())
        # Instances of a new version start together: each heals, and they converge.
        registries = await asyncio.gather(
            *(Registry.open(nc, "old_registry", 3.0) for _ in range(3))
        )
        stream = await js.stream_info(bucket_stream("old_registry"))
        assert stream.config.storage == StorageType.FILE

        async def all_beat() -> bool:
            # Puts as heartbeats would make them: a record a racing replacement took
            # comes back with its instance's next beat.
            for n, registry in enumerate(registries):
                await registry.put(info(f"new-{n}"))
            found = {i.instance_id for i in await registries[0].list("svc")}
            return found == {"new-0", "new-1", "new-2"}

        await wait_until(all_beat, "every instance's record in the file bucket", every=0.2)
    finally:
        await nc.close()


async def test_an_advertised_address_is_put_at_once_and_kept_by_every_beat_until_restored(
    registry,
):
    reg = Registration(registry, info("stood-in", port=5000), interval=0.05)
    await reg.start()
    try:
        await reg.advertise("127.0.0.1:6000")
        entry = await registry.kv.get(reg.info.key)
        assert InstanceInfo.from_json(entry.value).address == "127.0.0.1:6000"
        assert reg.info.address == "127.0.0.1:5000"  # what the instance is does not change

        # Several beats later (each a new revision), and after a status change, the
        # record still carries the advertised address.
        revision = entry.revision
        await wait_until(
            lambda: _revision_past(registry, reg.info.key, revision + 3), "three more beats"
        )
        record = InstanceInfo.from_json((await registry.kv.get(reg.info.key)).value)
        assert record.address == "127.0.0.1:6000"
        await reg.set_status(InstanceStatus.DRAINING)
        record = InstanceInfo.from_json((await registry.kv.get(reg.info.key)).value)
        assert record.address == "127.0.0.1:6000" and record.status is InstanceStatus.DRAINING

        await reg.advertise(None)
        record = InstanceInfo.from_json((await registry.kv.get(reg.info.key)).value)
        assert record.address == "127.0.0.1:5000" and record.status is InstanceStatus.DRAINING
        revision = (await registry.kv.get(reg.info.key)).revision
        await wait_until(
            lambda: _revision_past(registry, reg.info.key, revision + 3), "three more beats"
        )
        assert [i.address for i in await registry.list("svc")] == ["127.0.0.1:5000"]
    finally:
        await reg.close()


async def _revision_past(registry: Registry, key: str, revision: int) -> bool:
    return bool((await registry.kv.get(key)).revision >= revision)


async def test_advertise_refuses_what_is_not_a_host_and_port(registry):
    reg = Registration(registry, info("a"), interval=1.0)
    for bad in ("127.0.0.1", "127.0.0.1:", ":5000", "host:port", "host:70000", "host:0"):
        with pytest.raises(ValueError):
            await reg.advertise(bad)
    assert reg.published == reg.info
