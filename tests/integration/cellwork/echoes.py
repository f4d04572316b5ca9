"""Echo instances for resilience tests: healthy ones, and real instances of the echo
service that answer every ``Echo`` with one error (what ``chaos fail`` does to a
service), started in-process on the test's nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from cellwork import errors
from cellwork.config.settings import ServiceSettings
from cellwork.rpc.client import Client
from cellwork.service import Service
from cellwork.testing import start_service
from cellwork.testing.echo import PROTO_NAME, SERVICE_NAME, EchoSettings, create_service
from cellwork.testing.v1 import echo_pb2, echo_pb2_grpc

Start = Callable[..., Awaitable[Service]]


class FailingEcho(echo_pb2_grpc.EchoServicer):
    """Answers every Echo with ``error`` (a class of the error table), after the
    request's ``delay_ms``."""

    def __init__(self, error: type[errors.CellworkError]) -> None:
        self.error = error

    async def Echo(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoResponse:
        if request.delay_ms:
            await asyncio.sleep(request.delay_ms / 1000)
        raise self.error(f"echo fails with {self.error.__name__}")


def failing(error: type[errors.CellworkError]) -> Callable[[ServiceSettings], Service]:
    """A composition root of an echo instance whose every Echo fails with ``error``."""

    def create(settings: ServiceSettings) -> Service:
        service = Service(SERVICE_NAME, settings)
        service.add_grpc(echo_pb2_grpc.add_EchoServicer_to_server, FailingEcho(error), PROTO_NAME)
        return service

    return create


@pytest.fixture
async def echoes(nats_server) -> AsyncIterator[Start]:
    """``await echoes("id", failing=errors.Internal, echo_delay_ms=...)`` starts one."""
    started: list[Service] = []

    async def start(
        instance_id: str, failing_with: type[errors.CellworkError] | None = None, **settings: Any
    ) -> Service:
        factory = create_service if failing_with is None else failing(failing_with)
        service = await start_service(
            factory,
            nats_server.url,
            settings_class=EchoSettings,
            instance_id=instance_id,
            **settings,
        )
        started.append(service)
        return service

    yield start
    for service in started:
        await service.close()


def calls_to(client: Client[Any], instance_id: str) -> int:
    """Attempts ``client`` has sent to the instance (0 when it knows no such endpoint)."""
    return sum(
        e.stats.calls for e in client.balancer.endpoints if e.info.instance_id == instance_id
    )


def endpoint_of(client: Client[Any], instance_id: str) -> Any:
    return next(e for e in client.balancer.endpoints if e.info.instance_id == instance_id)


def metric(name: str, **labels: str) -> float:
    """The value this process's registry shows for one series (0 when it has none)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
