"""Registration, heartbeat expiry and deregistration, seen by a watcher on real NATS."""

import asyncio
import time

from cellwork.discovery import InstanceInfo, InstanceStatus, Registration, RegistryWatcher


def info(instance_id: str, port: int = 5000, service: str = "svc") -> InstanceInfo:
    return InstanceInfo(service=service, instance_id=instance_id, host="127.0.0.1", grpc_port=port)


async def test_watcher_sees_registration_status_changes_and_deregistration(registry):
    watcher = RegistryWatcher(registry, "svc")
    await watcher.start()
    try:
        reg = Registration(registry, info("a"), interval=0.5)
        await reg.start()
        seen = await watcher.wait_until(lambda xs: len(xs) == 1, timeout=2)
        assert seen[0].instance_id == "a" and seen[0].status is InstanceStatus.SERVING
        assert seen[0].started_at > 0

        await reg.set_status(InstanceStatus.DRAINING)
        await watcher.wait_until(
            lambda xs: xs and xs[0].status is InstanceStatus.DRAINING, timeout=2
        )

        start = time.monotonic()
        await reg.close()
        await watcher.wait_until(lambda xs: xs == [], timeout=2)
        assert time.monotonic() - start < 1.0
    finally:
        await watcher.close()


async def test_heartbeats_keep_an_entry_alive_past_the_ttl(registry):
    watcher = RegistryWatcher(registry, "svc", ttl=1.0)
    await watcher.start()
    reg = Registration(registry, info("beating"), interval=0.3)
    await reg.start()
    try:
        await watcher.wait_until(lambda xs: len(xs) == 1, timeout=2)
        await asyncio.sleep(2.0)
        assert [i.instance_id for i in watcher.instances()] == ["beating"]
    finally:
        await reg.close()
        await watcher.close()


async def test_an_entry_whose_heartbeat_stops_expires_without_any_delete(registry):
    watcher = RegistryWatcher(registry, "svc", ttl=1.0, sweep_interval=0.1)
    await watcher.start()
    try:
        await registry.put(info("silent"))  # one beat, then nothing: a crashed instance
        await watcher.wait_until(lambda xs: len(xs) == 1, timeout=2)
        start = time.monotonic()
        await watcher.wait_until(lambda xs: xs == [], timeout=3)
        assert 0.8 < time.monotonic() - start < 1.6
    finally:
        await watcher.close()


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


def test_the_embedded_nats_server_serves_its_monitoring_endpoint(nats_server) -> None:
    import json
    import urllib.request

    varz = json.loads(urllib.request.urlopen(f"{nats_server.monitor_url}/varz", timeout=5).read())
    assert varz["port"] == nats_server.port
    jsz = json.loads(urllib.request.urlopen(f"{nats_server.monitor_url}/jsz", timeout=5).read())
    assert "config" in jsz or "streams" in jsz
