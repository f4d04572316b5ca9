"""Live settings on a real nats-server: instances publish their schemas, apply a change
without a restart, start with what is set, ignore what does not validate, and keep their
values while NATS is away."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field
from structlog.testing import capture_logs

from cellwork import Service, ServiceSettings
from cellwork.config.admin import write_settings
from cellwork.config.bucket import ConfigBucket
from cellwork.config.dynamic import LiveGroup
from cellwork.events.connection import connect_nats
from cellwork.resilience import CallPolicy
from cellwork.service import calls_group
from cellwork.testing import NatsServer
from cellwork.testing.echo import echo_stub
from tests.waiting import wait_until

SETTINGS = ServiceSettings()


class Knobs(BaseModel):
    model_config = ConfigDict(frozen=True)

    limit: int = Field(10, ge=1, le=100)
    greeting: str = "hello"


class Instance:
    """One instance of the ``knobs`` service and every value its ``apply`` was given."""

    def __init__(self, nats_url: str, instance_id: str) -> None:
        self.applied: list[Knobs] = []
        self.service = Service(
            "knobs",
            ServiceSettings(nats_url=nats_url, instance_id=instance_id, drain_propagation=0.05),
        )
        self.knobs: LiveGroup[Knobs] = self.service.live("knobs", Knobs, self.applied.append)


@pytest.fixture
async def instances(nats_server: NatsServer) -> AsyncIterator[Callable[[str], Any]]:
    started: list[Instance] = []

    async def start(instance_id: str) -> Instance:
        made = Instance(nats_server.url, instance_id)
        await made.service.start()
        started.append(made)
        return made

    yield start
    for made in started:
        await made.service.close()


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[Any]:
    nc = await connect_nats(nats_server.url, name="test-live")
    yield nc.jetstream(timeout=5)
    await nc.close()


async def put(js: Any, values: dict[str, Any], instance: str | None = None) -> None:
    await write_settings(
        js,
        SETTINGS.config_bucket,
        SETTINGS.registry_bucket,
        "knobs",
        "knobs",
        values,
        instance=instance,
    )


async def test_a_change_is_applied_live_and_an_instance_started_later_starts_with_it(instances, js):
    first = await instances("knobs-0")
    bucket = await ConfigBucket.bind(js, SETTINGS.config_bucket)
    schemas = await bucket.schemas("knobs")
    assert sorted(schemas) == ["faults", "knobs", "registry"]
    assert schemas["knobs"]["properties"]["limit"]["maximum"] == 100
    assert first.applied == []  # nothing set: the code's own value, not applied again

    await put(js, {"limit": 20})
    await wait_until(lambda: first.knobs.value.limit == 20, "the change to be applied")
    assert first.applied == [Knobs(limit=20)]

    second = await instances("knobs-1")
    assert second.knobs.value == Knobs(limit=20)  # before it served
    assert second.applied == [Knobs(limit=20)]

    await put(js, {"greeting": "hi", "limit": 30}, instance="knobs-1")
    await wait_until(lambda: second.knobs.value.limit == 30, "the override to be applied")
    assert second.knobs.value == Knobs(limit=30, greeting="hi")
    await put(js, {"limit": 40})
    await wait_until(lambda: first.knobs.value.limit == 40, "the service-wide change")
    assert second.knobs.value.limit == 30  # its override still wins

    await bucket.delete("knobs.knobs.limit.knobs-1")
    await wait_until(lambda: second.knobs.value.limit == 40, "the override to be withdrawn")
    assert first.applied == [Knobs(limit=20), Knobs(limit=40)]


async def test_a_value_that_does_not_validate_is_logged_and_ignored(instances, js):
    instance = await instances("knobs-0")
    await put(js, {"limit": 20})
    await wait_until(lambda: instance.knobs.value.limit == 20, "the change to be applied")
    bucket = await ConfigBucket.bind(js, SETTINGS.config_bucket)
    with capture_logs() as logs:
        # Written past the CLI's check: the instance checks again, with the model.
        await bucket.put("knobs.knobs.limit", b"0")
        await bucket.put("knobs.knobs.greeting", b"not json")
        await bucket.put("knobs.knobs.colour", b'"red"')
        await bucket.put("knobs.knobs.greeting", b'"hey"')
        await wait_until(lambda: instance.knobs.value.greeting == "hey", "the valid change")
    refused = [e for e in logs if e["event"] == "config.refused"]
    assert [e["key"] for e in refused] == [
        "knobs.knobs.limit",
        "knobs.knobs.greeting",
        "knobs.knobs.colour",
    ]
    assert "greater than or equal to 1" in refused[0]["reason"]
    assert instance.knobs.value == Knobs(limit=20, greeting="hey")

    later = await instances("knobs-1")  # the bucket still holds limit=0: refused at start too
    assert later.knobs.value == Knobs(limit=10, greeting="hey")


async def test_values_stay_while_nats_is_away_and_what_changed_meanwhile_arrives_after(
    instances, nats_server
):
    instance = await instances("knobs-0")
    nc = await connect_nats(nats_server.url, name="test-live-outage")
    try:
        js = nc.jetstream(timeout=5)
        await put(js, {"limit": 20})
        await wait_until(lambda: instance.knobs.value.limit == 20, "the change to be applied")

        await asyncio.to_thread(nats_server.stop)
        await wait_until(lambda: not instance.service.live_settings.healthy, "the outage seen")
        assert instance.knobs.value.limit == 20
        await asyncio.to_thread(nats_server.start)
        await wait_until(lambda: nc.is_connected, "the test's connection to come back")
        await put(js, {"limit": 30})  # maybe before the instance's new watch: either way
        await wait_until(lambda: instance.knobs.value.limit == 30, "the change made after")
        assert instance.applied == [Knobs(limit=20), Knobs(limit=30)]
    finally:
        await nc.close()


async def test_a_nats_that_lost_its_store_gets_the_bucket_and_schemas_back_values_kept(
    instances, nats_server
):
    instance = await instances("knobs-0")
    nc = await connect_nats(nats_server.url, name="test-live-wiped")
    try:
        js = nc.jetstream(timeout=5)
        await put(js, {"limit": 20})
        await wait_until(lambda: instance.knobs.value.limit == 20, "the change to be applied")

        await asyncio.to_thread(nats_server.stop)
        shutil.rmtree(nats_server.store_dir / "jetstream")
        await asyncio.to_thread(nats_server.start)

        async def schemas_back() -> bool:
            try:
                bucket = await ConfigBucket.bind(js, SETTINGS.config_bucket)
                return sorted(await bucket.schemas("knobs")) == ["faults", "knobs", "registry"]
            except Exception:  # the bucket is not there yet, or the client reconnects
                return False

        await wait_until(schemas_back, "the instance to re-create the bucket and its schemas")
        assert instance.knobs.value.limit == 20  # nothing said otherwise: kept
        await put(js, {"limit": 50})
        await wait_until(lambda: instance.knobs.value.limit == 50, "a change after the wipe")
        record = await (await ConfigBucket.bind(js, SETTINGS.config_bucket)).get(
            "knobs.knobs._schema"
        )
        assert record is not None and json.loads(record[0])["instance"] == "knobs-0"
    finally:
        await nc.close()


async def test_groups_are_declared_once_and_before_start(nats_server):
    service = Service("knobs", ServiceSettings(nats_url=nats_server.url))
    with pytest.raises(ValueError, match="already has a live settings group 'faults'"):
        service.live("faults", Knobs, print)  # every service declares its faults
    with pytest.raises(ValueError, match="named by"):
        service.live("no.dots", Knobs, print)
    service.live("knobs", Knobs, print)
    await service.start()
    try:
        with pytest.raises(RuntimeError, match="before start"):
            service.live("later", Knobs, print)
    finally:
        await service.drain(1)


async def test_a_clients_call_policy_is_a_live_group(nats_server: NatsServer, js: Any) -> None:
    service = Service(
        "knobs",
        ServiceSettings(nats_url=nats_server.url, instance_id="k-1", drain_propagation=0.05),
    )
    client = service.client("echo", echo_stub)
    assert client.policy.breaker.open_seconds == 5.0
    await service.start()
    try:
        await write_settings(
            js,
            SETTINGS.config_bucket,
            SETTINGS.registry_bucket,
            "knobs",
            calls_group("echo"),
            {"breaker": {"open_seconds": 2.0}, "max_in_flight": 7},
        )
        await wait_until(
            lambda: client.policy.max_in_flight == 7, "the client's policy changed live"
        )
        assert client.policy.breaker.open_seconds == 2.0
        assert client.policy.retry == CallPolicy().retry  # what was not set keeps its value
        with pytest.raises(Exception, match="max_in_flight"):
            await write_settings(
                js,
                SETTINGS.config_bucket,
                SETTINGS.registry_bucket,
                "knobs",
                calls_group("echo"),
                {"max_in_flight": 0},
            )
        assert client.policy.max_in_flight == 7
    finally:
        await service.close()
