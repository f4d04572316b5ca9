"""The echo service: a real cellwork service for tests, benchmarks and smoke checks.

``cellwork serve cellwork.testing.echo`` runs it. Environment knobs (all optional):
``CELLWORK_ECHO_DELAY_MS`` adds latency to every call; ``CELLWORK_ECHO_IGNORE_SIGTERM=1``
makes the instance ignore SIGTERM (to test the supervisor's escalation);
``CELLWORK_ECHO_RELAY_TO`` names the service ``Relay`` calls (default ``echo``).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from grpc import aio
from pydantic_settings import SettingsConfigDict

from cellwork import errors
from cellwork.config.settings import ServiceSettings
from cellwork.rpc.context import current_call
from cellwork.service import Service
from cellwork.testing.v1 import echo_pb2, echo_pb2_grpc
from cellwork.testing.v1.echo_client import EchoClient

SERVICE_NAME = "echo"
PROTO_NAME = "cellwork.testing.v1.Echo"


class EchoSettings(ServiceSettings):
    """Echo's own knobs on top of the common settings."""

    model_config = SettingsConfigDict(env_prefix="CELLWORK_", extra="ignore")

    echo_delay_ms: float = 0.0
    echo_ignore_sigterm: bool = False
    echo_relay_to: str = SERVICE_NAME


class EchoServicer(echo_pb2_grpc.EchoServicer):
    """Echoes payloads and reports what the server saw of the call."""

    def __init__(self, instance_id: str, relay: EchoClient, delay_ms: float = 0.0) -> None:
        self.instance_id = instance_id
        self.relay = relay
        self.delay_ms = delay_ms

    def _seen(self, payload: bytes) -> echo_pb2.EchoResponse:
        call = current_call()
        remaining = call.time_remaining() if call is not None else None
        return echo_pb2.EchoResponse(
            payload=payload,
            instance_id=self.instance_id,
            deadline_remaining_ms=(remaining or 0.0) * 1000.0,
            request_id=call.request_id if call else "",
            trace_id=call.trace.trace_id if call else "",
            caller=call.caller if call else "",
        )

    async def Echo(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoResponse:
        response = self._seen(request.payload)
        delay = self.delay_ms + request.delay_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        return response

    async def Relay(self, request: echo_pb2.RelayRequest, context: Any) -> echo_pb2.EchoResponse:
        if request.wait_ms:
            await asyncio.sleep(request.wait_ms / 1000.0)
        return await self.relay.echo(request.inner)

    async def Fail(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoResponse:
        """Raise the error class named by the payload, ``Name`` or ``Name:retry_after``
        (``Overloaded:2.5``); a name that is no error class raises a plain bug."""
        name, _, retry_after = request.payload.decode(errors="replace").partition(":")
        error = getattr(errors, name, None)
        if isinstance(error, type) and issubclass(error, errors.CellworkError):
            raise error(
                f"echo raised {name}", retry_after=float(retry_after) if retry_after else None
            )
        raise RuntimeError(f"unexpected failure {name!r}")


def create_service(settings: ServiceSettings) -> Service:
    """Composition root of the echo service."""
    echo_settings = (
        settings if isinstance(settings, EchoSettings) else EchoSettings(**settings.model_dump())
    )
    service = Service(SERVICE_NAME, echo_settings)
    relay = service.client(echo_settings.echo_relay_to, EchoClient)
    servicer = EchoServicer(echo_settings.instance_id, relay, echo_settings.echo_delay_ms)
    service.add_grpc(echo_pb2_grpc.add_EchoServicer_to_server, servicer, PROTO_NAME)

    if echo_settings.echo_ignore_sigterm:

        @service.on_start
        async def ignore_sigterm() -> None:
            # After start: `cellwork serve` installs its handler before starting the service.
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    return service


def echo_stub(channel: aio.Channel) -> echo_pb2_grpc.EchoStub:
    """Stub factory for clients of the echo service."""
    return echo_pb2_grpc.EchoStub(channel)
