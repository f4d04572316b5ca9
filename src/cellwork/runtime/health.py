"""Ask instances the standard gRPC health question, with a deadline."""

from __future__ import annotations

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc


class HealthProbe:
    """Keeps one channel per address and checks ``grpc.health.v1.Health/Check``."""

    def __init__(self, timeout: float = 1.0) -> None:
        self.timeout = timeout
        self._channels: dict[str, tuple[aio.Channel, health_pb2_grpc.HealthStub]] = {}

    async def check(self, address: str) -> bool:
        """True only when the instance answers SERVING within the timeout."""
        entry = self._channels.get(address)
        if entry is None:
            channel = aio.insecure_channel(address, options=[("grpc.enable_retries", 0)])
            entry = self._channels[address] = (channel, health_pb2_grpc.HealthStub(channel))
        try:
            reply = await entry[1].Check(health_pb2.HealthCheckRequest(), timeout=self.timeout)
        except aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def forget(self, address: str) -> None:
        """Close the channel to an address that is gone."""
        entry = self._channels.pop(address, None)
        if entry is not None:
            await entry[0].close(grace=None)

    async def close(self) -> None:
        """Close every channel."""
        for address in list(self._channels):
            await self.forget(address)
