"""Static stability: a watcher holds its endpoints while NATS is away, and expires the
dead ones only once the registry is healthy again and instances had a TTL to return."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from cellwork.discovery import InstanceInfo, Registration, RegistryWatcher
from cellwork.discovery.registry import Registry
from cellwork.events.connection import connect_nats
from cellwork.runtime.nats_server import NatsServer, free_port
from tests.waiting import POLL, wait_until

TTL = 1.0


def info(instance_id: str, port: int) -> InstanceInfo:
    return InstanceInfo(service="svc", instance_id=instance_id, host="127.0.0.1", grpc_port=port)


def ids(watcher: RegistryWatcher) -> set[str]:
    return {i.instance_id for i in watcher.instances()}


def held(watch: str) -> float | None:
    return REGISTRY.get_sample_value("cellwork_registry_held_endpoints", {"watch": watch})


async def observe_for(seconds: float, check: Callable[[], None]) -> None:
    """Assert ``check()`` at every poll for ``seconds``: what must hold over a period."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        check()
        await asyncio.sleep(POLL)
    check()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server the test may stop and start again on the same port."""
    nats = NatsServer(tmp_path / "nats", port=free_port())
    nats.start()
    try:
        yield nats
    finally:
        nats.stop()


@pytest_asyncio.fixture
async def registry(server: NatsServer) -> AsyncIterator[Registry]:
    nc = await connect_nats(server.url, name="test-watcher")
    try:
        yield await Registry.open(nc, "registry_outage", TTL)
    finally:
        await nc.close()


async def beat_forever(registry: Registry, record: InstanceInfo) -> None:
    """An instance's beats, ended by cancelling the task: a crash, no delete."""
    while True:
        with contextlib.suppress(Exception):
            await registry.put(record)
        await asyncio.sleep(0.2)


async def test_a_watcher_holds_endpoints_while_nats_is_down_then_expires_the_dead_one(
    server: NatsServer, registry: Registry
) -> None:
    watcher = RegistryWatcher(registry, "svc", sweep_interval=0.1, probe_interval=0.2)
    await watcher.start()
    alive = Registration(registry, info("alive", 5001), interval=0.2)
    await alive.start()
    crashing = asyncio.create_task(beat_forever(registry, info("dead", 5002)))
    try:
        await wait_until(lambda: ids(watcher) == {"alive", "dead"}, "both registered")
        assert watcher.healthy and held("svc") == 0

        server.stop()
        crashing.cancel()  # "dead" dies with the outage and never comes back
        stopped = time.monotonic()
        await wait_until(lambda: not watcher.healthy, "the watcher to see the outage")
        assert held("svc") == 2

        def still_holding() -> None:
            assert ids(watcher) == {"alive", "dead"}

        await observe_for(3 * TTL - (time.monotonic() - stopped) + 0.5, still_holding)

        server.start()  # same port, same store
        await wait_until(lambda: watcher.healthy, "the watcher to recover")
        assert held("svc") == 0
        # A fresh TTL to come back first: "dead" stays, though its last beat is long past
        # a TTL. Watched for half a TTL only, as the test sees the recovery a little late.
        await observe_for(TTL / 2, still_holding)
        await wait_until(lambda: ids(watcher) == {"alive"}, "the dead instance to expire")
        assert alive.healthy
    finally:
        crashing.cancel()
        await alive.close()
        await watcher.close()


async def test_a_watcher_follows_a_bucket_recreated_after_the_store_was_wiped(
    server: NatsServer, registry: Registry
) -> None:
    watcher = RegistryWatcher(registry, "svc", sweep_interval=0.1, probe_interval=0.2)
    await watcher.start()
    first = Registration(registry, info("first", 5001), interval=0.2)
    await first.start()
    try:
        await wait_until(lambda: ids(watcher) == {"first"}, "the first registration")
        server.stop()
        await wait_until(lambda: not watcher.healthy, "the watcher to see the outage")
        shutil.rmtree(server.store_dir / "jetstream")
        server.start()
        # The registration re-creates the bucket and puts its record at once; the watcher
        # makes a new watch on the new bucket and sees later changes too.
        await wait_until(lambda: watcher.healthy and first.healthy, "both to recover")
        await registry.put(info("second", 5002))
        await wait_until(lambda: ids(watcher) == {"first", "second"}, "a record put after")
        assert {i.instance_id for i in await registry.list("svc")} == {"first", "second"}
    finally:
        await first.close()
        await watcher.close()


async def test_a_watcher_holds_its_endpoints_while_the_server_hangs(
    server: NatsServer, registry: Registry
) -> None:
    # A stopped process keeps its connections open and answers nothing, as a server does
    # while it shuts down slowly: the probe stalls instead of failing, and must not vouch.
    watcher = RegistryWatcher(registry, "svc", sweep_interval=0.1, probe_interval=0.2)
    await watcher.start()
    alive = Registration(registry, info("alive", 5001), interval=0.2)
    await alive.start()
    assert server.process is not None
    try:
        await wait_until(lambda: ids(watcher) == {"alive"}, "the registration")
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            await observe_for(4 * TTL, lambda: ids(watcher) == {"alive"} or pytest.fail("expired"))
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        await wait_until(lambda: watcher.healthy and alive.healthy, "both to recover")
        await observe_for(2 * TTL, lambda: ids(watcher) == {"alive"} or pytest.fail("expired"))
    finally:
        await alive.close()
        await watcher.close()


async def start_and_close(registry: Registry, instance_id: str) -> None:
    """Start a watcher and a registration that probe and beat every millisecond, then
    close both: each close must end."""
    watcher = RegistryWatcher(registry, "svc", sweep_interval=0.01, probe_interval=0.001)
    await watcher.start()
    registration = Registration(registry, info(instance_id, 5001), interval=0.002, poll=0.001)
    await registration.start()
    await wait_until(lambda: ids(watcher) == {instance_id}, "the instance to be seen")
    for part in (registration, watcher):
        closing = asyncio.create_task(part.close())
        await wait_until(closing.done, f"{type(part).__name__}.close() of {instance_id}")
        closing.result()
    assert await registry.list("svc") == []  # the closed registration deleted its record


async def test_a_watcher_and_a_registration_close_however_their_requests_stand(
    registry: Registry,
) -> None:
    # A close often comes as a probe's or a beat's reply lands, when a single cancel
    # may be swallowed (asyncio.wait_for on Python 3.11): both must close all the same.
    for round_ in range(40):
        await start_and_close(registry, f"i{round_}")
