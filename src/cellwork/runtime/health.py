"""Ask instances the standard gRPC health question, with a deadline.

The supervisor probes *liveness*: it needs to know whether an instance answers at
all, not whether it can serve right now (a draining or degraded instance answers
NOT_SERVING and must not be killed for it). So a check tells three outcomes apart.
"""

from __future__ import annotations

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cellwork.runtime.events import ProbeResult

# A status that means the process did not answer: nothing listening, or no answer in time.
_SILENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class HealthProbe:
    """Keeps one channel per address and checks ``grpc.health.v1.Health/Check``."""

    def __init__(self, timeout: float = 1.0) -> None:
        self.timeout = timeout
        self._channels: dict[str, tuple[aio.Channel, health_pb2_grpc.HealthStub]] = {}

    async def check(self, address: str) -> bool:
        """True only when the instance answers SERVING within the timeout."""
        return await self.ask(address) is ProbeResult.SERVING

    async def ask(self, address: str) -> ProbeResult:
        """SERVING, NOT_SERVING (any other answer, an error status included) or NO_ANSWER
        (refused, or nothing within the timeout)."""
        entry = self._channels.get(address)
        if entry is None:
            channel = aio.insecure_channel(address, options=[("grpc.enable_retries", 0)])
            entry = self._channels[address] = (channel, health_pb2_grpc.HealthStub(channel))
        try:
            reply = await entry[1].Check(health_pb2.HealthCheckRequest(), timeout=self.timeout)
        except aio.AioRpcError as exc:
            return ProbeResult.NO_ANSWER if exc.code() in _SILENT else ProbeResult.NOT_SERVING
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return ProbeResult.SERVING
        return ProbeResult.NOT_SERVING

    async def forget(self, address: str) -> None:
        """Close the channel to an address that is gone."""
        entry = self._channels.pop(address, None)
        if entry is not None:
            await entry[0].close(grace=None)

    async def close(self) -> None:
        """Close every channel."""
        for address in list(self._channels):
            await self.forget(address)
