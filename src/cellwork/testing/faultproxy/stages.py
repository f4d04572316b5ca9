"""What each toxic does to one proxied connection: a stage per toxic and connection.

A stage gets each chunk of its direction with ``send``, the rest of the chain: it
passes the chunk on (maybe later, maybe in pieces, maybe cut short), swallows it, or
ends the connection. A stage keeps what it must remember across chunks of its
connection (bytes left to the limit, the pacing), so two connections never share it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from cellwork.testing.faultproxy.toxics import (
    AddedToxic,
    Bandwidth,
    Latency,
    LimitData,
    Pacer,
    ResetPeer,
    Slicer,
    Timeout,
    Toxic,
    latency_wait,
    slice_sizes,
)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes of one direction, and when the proxy read them (loop time)."""

    data: bytes
    arrived: float  # loop time when it was read


Send = Callable[[Chunk], Awaitable[None]]


class LinkClosed(Exception):
    """A stage closed or reset its connection: the pump stops."""


class Link(Protocol):
    """The connection a stage acts on."""

    @property
    def rng(self) -> random.Random: ...

    def close(self) -> None:
        """Close both sockets gracefully (what was written is still delivered)."""

    def reset(self) -> None:
        """Reset both sockets (RST)."""


class Stage:
    """What one toxic does to one connection, with the state it keeps there."""

    def __init__(self, link: Link, added: AddedToxic) -> None:
        self.link = link
        self.added = added
        self.removed = False
        self.loop = asyncio.get_running_loop()

    async def run(self, chunk: Chunk, send: Send) -> None:
        """Act on one chunk: ``await send(...)`` what goes on; raise LinkClosed after
        closing the connection."""
        await send(chunk)

    def attached(self) -> None:
        """Called once the stage is in the chain."""

    def detached(self) -> None:
        """Called when its toxic is removed while the connection is open."""
        self.removed = True

    def detached_by_close(self) -> None:
        """Called when the connection closes."""
        self.removed = True


class _LatencyStage(Stage):
    async def run(self, chunk: Chunk, send: Send) -> None:
        assert isinstance(self.added.toxic, Latency)
        waited = self.loop.time() - chunk.arrived
        await asyncio.sleep(latency_wait(self.added.toxic, waited, self.link.rng))
        await send(chunk)


class _TimeoutStage(Stage):
    def __init__(self, link: Link, added: AddedToxic) -> None:
        super().__init__(link, added)
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, chunk: Chunk, send: Send) -> None:
        return  # swallowed

    def attached(self) -> None:
        assert isinstance(self.added.toxic, Timeout)
        if self.added.toxic.timeout_ms > 0:
            self._timer = self.loop.call_later(self.added.toxic.timeout_ms / 1000, self.link.close)

    def detached(self) -> None:
        super().detached()
        if self._timer is not None:
            self._timer.cancel()
        self.link.close()  # what it swallowed is lost: the stream cannot go on

    def detached_by_close(self) -> None:
        super().detached_by_close()
        if self._timer is not None:
            self._timer.cancel()


class _ResetStage(Stage):
    async def run(self, chunk: Chunk, send: Send) -> None:
        assert isinstance(self.added.toxic, ResetPeer)
        await asyncio.sleep(self.added.toxic.timeout_ms / 1000)
        if self.removed:  # removed while waiting: the data goes on
            await send(chunk)
            return
        self.link.reset()
        raise LinkClosed


class _BandwidthStage(Stage):
    def __init__(self, link: Link, added: AddedToxic) -> None:
        super().__init__(link, added)
        assert isinstance(added.toxic, Bandwidth)
        rate = added.toxic.bytes_per_second
        self._pacer = Pacer(rate) if rate > 0 else None

    async def run(self, chunk: Chunk, send: Send) -> None:
        if self._pacer is None:
            await send(chunk)
            return
        step = self._pacer.piece_size()
        data = chunk.data
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            release = self._pacer.release_at(self.loop.time(), len(piece))
            await asyncio.sleep(release - self.loop.time())
            await send(Chunk(piece, chunk.arrived))


class _SlicerStage(Stage):
    async def run(self, chunk: Chunk, send: Send) -> None:
        toxic = self.added.toxic
        assert isinstance(toxic, Slicer)
        rng = self.link.rng
        sizes = slice_sizes(len(chunk.data), toxic.average_size, toxic.size_variation, rng)
        start = 0
        for i, size in enumerate(sizes):
            if i and toxic.delay_us:
                await asyncio.sleep(toxic.delay_us / 1_000_000)
            await send(Chunk(chunk.data[start : start + size], chunk.arrived))
            start += size


class _LimitStage(Stage):
    def __init__(self, link: Link, added: AddedToxic) -> None:
        super().__init__(link, added)
        assert isinstance(added.toxic, LimitData)
        self._left = added.toxic.bytes

    async def run(self, chunk: Chunk, send: Send) -> None:
        passed = chunk.data[: self._left]
        if passed:
            await send(Chunk(passed, chunk.arrived))
            self._left -= len(passed)
        if self._left <= 0 and not self.removed:
            self.link.close()
            raise LinkClosed


# The stage that carries out each kind of toxic: a new toxic is a value in toxics.py
# and a stage here.
STAGES: dict[type[Toxic], Callable[[Link, AddedToxic], Stage]] = {
    Latency: _LatencyStage,
    Timeout: _TimeoutStage,
    ResetPeer: _ResetStage,
    Bandwidth: _BandwidthStage,
    Slicer: _SlicerStage,
    LimitData: _LimitStage,
}
