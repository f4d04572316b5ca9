"""An async gRPC server with health, reflection and the server chain built in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from cellwork.resilience.adaptive import ConcurrencyLimiter, LimitSettings
from cellwork.rpc.interceptors import Layer, ServerChain
from cellwork.rpc.shedding import SERVER_LIMITS

RegisterFn = Callable[[Any, aio.Server], None]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class RpcServer:
    """One grpc.aio server: your servicers plus ``grpc.health.v1`` and reflection.

    Lifecycle: ``add`` servicers, ``start()`` (binds, returns the port; health stays
    NOT_SERVING until ``set_serving(True)``, once everything behind the servicers has
    started), ``drain(timeout)`` (health NOT_SERVING, refuse new calls, wait for
    in-flight ones up to ``timeout``), ``close()`` (stop now).

    Each method's in-flight calls are held to an adaptive concurrency limit shaped by
    ``limits`` (``rpc/shedding.py``; None turns shedding off): there is no worker count
    to tune, and what is over the limit is refused at once as ``Overloaded``.
    """

    def __init__(
        self,
        service: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        layers: Sequence[Layer] = (),
        access_log: bool = False,
        slow_call_seconds: float = 1.0,
        options: Sequence[tuple[str, Any]] = (),
        limits: LimitSettings | None = SERVER_LIMITS,
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self._chain = ServerChain(
            service,
            layers,
            access_log=access_log,
            slow_call_seconds=slow_call_seconds,
            limits=limits,
        )
        self._server = aio.server(
            interceptors=[self._chain],
            options=[("grpc.so_reuseport", 0), *options],
        )
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self._service_names: list[str] = [
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        ]
        self._started = False

    def add(self, register: RegisterFn, servicer: Any, full_name: str) -> None:
        """Add a servicer with its generated ``add_XServicer_to_server`` function.

        ``full_name`` is the proto service name (``pkg.v1.Service``), used for
        reflection and per-service health.
        """
        if self._started:
            raise RuntimeError("add servicers before start()")
        register(servicer, self._server)
        self._service_names.append(full_name)

    @property
    def limiters(self) -> dict[str, ConcurrencyLimiter]:
        """Each method's concurrency limiter, by ``Service/Method``, once it was called."""
        return self._chain.limiters

    @property
    def service_names(self) -> tuple[str, ...]:
        """Proto names of every service this server answers (health included)."""
        return tuple(self._service_names)

    async def start(self) -> int:
        """Bind and start serving; return the bound port. Health says NOT_SERVING."""
        reflection.enable_server_reflection(
            [*self._service_names, reflection.SERVICE_NAME], self._server
        )
        self.port = self._server.add_insecure_port(f"{self.host}:{self.port}")
        if self.port == 0:
            raise OSError(f"could not bind gRPC server on {self.host}")
        await self.set_serving(False)
        await self._server.start()
        self._started = True
        return self.port

    async def set_serving(self, serving: bool) -> None:
        """Set the overall and per-service health status."""
        status = SERVING if serving else NOT_SERVING
        for name in ("", *self._service_names[1:]):
            await self.health.set(name, status)

    async def drain(self, timeout: float) -> None:
        """Stop taking calls and wait up to ``timeout`` s for in-flight ones to finish."""
        if not self._started:
            return
        await self.set_serving(False)
        await self._server.stop(grace=timeout)
        self._started = False

    async def close(self) -> None:
        """Stop at once, cancelling in-flight calls."""
        await self._server.stop(grace=None)
        self._started = False

    async def wait_for_termination(self) -> None:
        """Return when the server has stopped."""
        await self._server.wait_for_termination()


def status_code_of(exc: BaseException) -> grpc.StatusCode | None:
    """Return the gRPC status of a failed call, or None for other errors."""
    if isinstance(exc, aio.AioRpcError):
        code: grpc.StatusCode = exc.code()
        return code
    return None
