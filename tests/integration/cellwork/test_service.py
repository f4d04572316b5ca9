"""A Service is wired where it is built and started in one order: clients, publisher and
fan-out exist at once, databases are migrated before hooks, health turns SERVING last."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from cellwork import NoEndpoints, Service, ServiceSettings
from cellwork.data import Migration, sqlite_url
from cellwork.discovery import RegistryWatcher
from cellwork.discovery.registry import Registry
from cellwork.events import StreamSpec, connect_nats
from cellwork.runtime.health import HealthProbe
from cellwork.testing import NatsServer, free_port, start_service
from cellwork.testing.echo import EchoSettings
from cellwork.testing.echo import create_service as create_echo
from cellwork.testing.v1 import echo_pb2, echo_pb2_grpc
from cellwork.testing.v1.echo_client import EchoClient
from tests.waiting import BOUND, wait_until

NOTES = (Migration(1, "notes", ("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",)),)


def settings(nats_url: str, **extra: object) -> ServiceSettings:
    return ServiceSettings(nats_url=nats_url, drain_propagation=0.05, **extra)  # type: ignore[arg-type]


async def test_a_client_exists_before_start_and_calls_once_started(nats_server):
    echo = await start_service(create_echo, nats_server.url, instance_id="echo-0")
    caller = Service("caller", settings(nats_server.url))
    client = caller.client("echo", EchoClient)
    with pytest.raises(NoEndpoints):
        await client.echo(echo_pb2.EchoRequest(payload=b"early"))
    await caller.start()
    try:
        await client.balancer.wait_for_endpoints(1)
        reply = await client.echo(echo_pb2.EchoRequest(payload=b"hi"))
        assert (reply.payload, reply.caller) == (b"hi", "caller")
        with pytest.raises(RuntimeError):
            caller.client("echo", EchoClient)  # declared after start
    finally:
        await caller.drain(1)
        await echo.drain(1)


async def test_a_misspelt_method_of_an_untyped_client_is_a_clear_error(nats_server):
    echo = await start_service(create_echo, nats_server.url, instance_id="echo-0")
    caller = Service("caller", settings(nats_server.url))
    client = caller.client("echo", echo_pb2_grpc.EchoStub)
    await caller.start()
    try:
        await client.balancer.wait_for_endpoints(1)
        with pytest.raises(ValueError, match="no method 'Ecko'"):
            await client.call("Ecko", echo_pb2.EchoRequest())
    finally:
        await caller.drain(1)
        await echo.drain(1)


async def test_health_turns_serving_only_after_every_start_hook(nats_server, registry):
    service = Service("slow", settings(nats_server.url))
    release = asyncio.Event()
    hook_running = asyncio.Event()

    @service.on_start
    async def warm_up() -> None:
        hook_running.set()
        await release.wait()

    watcher = RegistryWatcher(registry, "slow")
    await watcher.start()
    starting = asyncio.create_task(service.start())
    probe = HealthProbe(timeout=1.0)
    try:
        await asyncio.wait_for(hook_running.wait(), 10)
        assert service.server is not None
        address = f"127.0.0.1:{service.server.port}"
        assert await probe.check(address) is False  # serving gRPC, not yet SERVING
        assert watcher.instances() == []  # nor registered
        release.set()
        await asyncio.wait_for(starting, 10)
        assert await probe.check(address) is True
        await watcher.wait_until(lambda found: len(found) == 1, timeout=5)
    finally:
        release.set()
        await probe.close()
        await watcher.close()
        await service.drain(1)


async def test_a_database_is_migrated_before_hooks_under_the_declared_name(
    nats_server, tmp_path: Path
):
    # The cell renames the service; the schema stays its code's.
    service = Service("notes", settings(nats_server.url, service="notes-2"))
    engine = service.add_database(sqlite_url(tmp_path, "notes"), NOTES)
    seen: list[str] = []

    @service.on_start
    async def read_notes() -> None:
        async with engine.connect() as conn:
            seen.append(str((await conn.execute(text("SELECT count(*) FROM notes"))).scalar()))

    await service.start()
    try:
        assert seen == ["0"]
        assert service.name == "notes-2"
        async with engine.connect() as conn:
            owners = (await conn.execute(text("SELECT service FROM cellwork_migrations"))).all()
        assert [row[0] for row in owners] == ["notes"]
    finally:
        await service.drain(1)


async def test_events_queued_before_start_are_published_once_started(nats_server):
    service = Service("writer", settings(nats_server.url))
    service.add_streams(StreamSpec("NOTES", ("notes.*",)))
    service.publisher.publish_soon("notes.new", b"first", "note-1")
    await service.start()
    nc = await connect_nats(nats_server.url, "test-reader")
    try:
        sub = await nc.jetstream().subscribe("notes.*", stream="NOTES")
        message = await sub.next_msg(timeout=5)
        assert message.data == b"first"
    finally:
        await nc.close()
        await service.drain(1)


async def test_a_subscription_declared_in_the_root_hears_broadcasts(nats_server):
    heard: list[bytes] = []
    got = asyncio.Event()

    async def on_news(subject: str, data: bytes) -> None:
        heard.append(data)
        got.set()

    listener = Service("listener", settings(nats_server.url))
    listener.subscribe("news.*", on_news)
    speaker = Service("speaker", settings(nats_server.url))
    await listener.start()
    await speaker.start()
    try:
        await speaker.broadcast("news.x", b"hello", confirm=True)
        await asyncio.wait_for(got.wait(), 5)
        assert heard == [b"hello"]
    finally:
        await speaker.drain(1)
        await listener.drain(1)


OUTAGE = {"registry_ttl": 1.0, "heartbeat_interval": 0.2}  # a few TTLs are short


async def test_a_service_heals_after_nats_restarts_with_its_store_wiped(tmp_path: Path):
    server = NatsServer(tmp_path / "nats", port=free_port()).start()
    echo = create_echo(
        EchoSettings(nats_url=server.url, instance_id="echo-0", drain_propagation=0.05, **OUTAGE)  # type: ignore[arg-type]
    )
    echo.add_streams(StreamSpec("NOTES", ("notes.*",)))
    caller = Service("caller", settings(server.url, **OUTAGE))
    client = caller.client("echo", EchoClient)
    calls = {"ok": 0, "failed": 0}

    async def call_forever() -> None:
        while True:
            try:
                await client.echo(echo_pb2.EchoRequest(payload=b"x"))
                calls["ok"] += 1
            except Exception:
                calls["failed"] += 1
            await asyncio.sleep(0.01)

    await echo.start()
    await caller.start()
    loop = asyncio.create_task(call_forever())
    try:
        await client.balancer.wait_for_endpoints(1)
        await wait_until(lambda: calls["ok"] > 10, "calls before the outage")
        server.stop()
        await wait_until(lambda: not caller.dependencies()["nats"], "the caller to see it")
        shutil.rmtree(server.store_dir / "jetstream")
        down = time.monotonic()
        before = calls["ok"]
        # Three TTLs without a registry: the caller keeps its endpoint and its calls.
        await wait_until(lambda: time.monotonic() - down > 3.0, "three TTLs of outage")
        assert calls["ok"] > before and client.has_endpoints()
        assert caller.dependencies() == {"nats": False, "registry": False}

        server.start()
        nc = await connect_nats(server.url, "test-after")
        try:
            js = nc.jetstream()

            async def exists(stream: str) -> bool:
                try:
                    await js.stream_info(stream)
                except Exception:
                    return False
                return True

            # Re-created by the instances themselves, not by this test.
            await wait_until(lambda: exists("KV_cellwork_registry"), "the registry bucket")
            await wait_until(lambda: exists("NOTES"), "the echo's stream")
            registry = await Registry.open(nc, "cellwork_registry", 1.0)
            fresh = RegistryWatcher(registry, "echo")
            await fresh.start()
            try:
                await fresh.wait_until(lambda found: len(found) == 1, timeout=BOUND)
            finally:
                await fresh.close()
            await wait_until(
                lambda: caller.dependencies() == {"nats": True, "registry": True},
                "the caller's dependencies to be back",
            )
        finally:
            await nc.close()
        after = calls["ok"]
        await wait_until(lambda: calls["ok"] > after + 10, "calls after the outage")
        assert calls["failed"] == 0
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await caller.drain(1)
        await echo.drain(1)
        server.stop()


async def test_a_service_started_while_nats_is_down_starts_once_it_is_up(tmp_path: Path):
    server = NatsServer(tmp_path / "nats", port=free_port())
    service = create_echo(
        EchoSettings(nats_url=server.url, instance_id="echo-late", drain_propagation=0.05)
    )
    starting = asyncio.create_task(service.start())
    try:
        # Observable while it waits: its metrics say NATS is down.
        await wait_until(lambda: service.metrics_port != 0, "the metrics server")
        url = f"http://127.0.0.1:{service.metrics_port}/metrics"
        async with httpx.AsyncClient() as http:
            text = (await http.get(url)).text
        assert 'cellwork_dependency_up{dependency="nats"} 0.0' in text
        assert not starting.done()

        server.start()
        await asyncio.wait_for(starting, BOUND)
        assert service.serving and service.dependencies()["nats"]
        nc = await connect_nats(server.url, "test-late")
        try:
            registry = await Registry.open(nc, "cellwork_registry", 3.0)
            assert [i.instance_id for i in await registry.list("echo")] == ["echo-late"]
        finally:
            await nc.close()
    finally:
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        await service.drain(1)
        server.stop()
