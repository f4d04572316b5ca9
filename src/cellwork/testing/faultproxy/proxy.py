"""The proxy: accepts connections, dials the upstream, pumps bytes through the toxics.

Each accepted connection is a ``_Link`` with two directions. In each, a reader task
stamps every chunk with its arrival time and queues it (bounded), and a forwarder
passes it through the direction's toxics, in the order they were added, and writes
what comes out: a latency counts from arrival, so chunks queued behind a delayed one
are not delayed twice. Each toxic acts through a per-connection stage that keeps its
state (bytes left, pacing) across chunks; adding or removing a toxic changes the
stages of every open connection at once and of every later one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

from cellwork.discovery.registry import Registration
from cellwork.testing.faultproxy.stages import STAGES, Chunk, LinkClosed, Stage
from cellwork.testing.faultproxy.toxics import AddedToxic, Direction, Toxic

# One read: large enough that a bulk transfer is not chopped finer than the toxics ask.
_READ_SIZE = 64 * 1024
# Chunks read ahead of the toxics per direction: bounds the memory a stalled link
# holds (then TCP's own window pushes back on the sender).
_QUEUE_CHUNKS = 64
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@dataclass(slots=True)
class ProxyStats:
    """What went through a proxy since it started."""

    accepted: int = 0  # connections accepted
    upstream_bytes: int = 0  # written to the upstream (the caller's requests)
    downstream_bytes: int = 0  # written back to callers (the upstream's answers)


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` (``host:port``) that applies
    toxics (``faultproxy.toxics``) to the bytes of every connection, added and removed while
    it runs.

    Lifecycle: ``start()`` listens (``address`` is then where to dial), ``close()``
    stops listening and closes every proxied connection; or ``async with``. ``seed``
    makes jitter, toxicity and slicing repeatable. Raises ValueError for an
    ``upstream`` that is not ``host:port``. Not for production traffic: every chunk
    costs a few task switches.
    """

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.upstream = upstream
        self._up_host, _, up_port = upstream.rpartition(":")
        self._up_port = int(up_port)
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self.rng = random.Random(seed)  # jitter, toxicity draws, slicing
        self.stats = ProxyStats()
        self._toxics: dict[str, AddedToxic] = {}
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        """``host:port`` where the proxy listens; raises RuntimeError before ``start()``."""
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return f"{self._host}:{self._port}"

    @property
    def connections(self) -> int:
        """Proxied connections open now."""
        return len(self._links)

    @property
    def toxics(self) -> list[AddedToxic]:
        """The toxics in force, in the order they act."""
        return list(self._toxics.values())

    async def start(self) -> None:
        """Listen (on a free port unless one was given)."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close every proxied connection (idempotent)."""
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def add(
        self,
        toxic: Toxic,
        *,
        direction: Direction = Direction.DOWNSTREAM,
        name: str | None = None,
        toxicity: float = 1.0,
    ) -> str:
        """Add ``toxic`` on ``direction`` to every open and later connection; return its
        name (default ``<kind>_<direction>``, as Toxiproxy). Raises ValueError when the
        name is taken or ``toxicity`` is not within 0..1."""
        name = name or f"{toxic.kind}_{direction.value}"
        if name in self._toxics:
            raise ValueError(f"the proxy already has a toxic named {name!r}")
        if not 0.0 <= toxicity <= 1.0:
            raise ValueError("toxicity is a share of connections, 0..1")
        added = AddedToxic(name, toxic, direction, toxicity)
        self._toxics[name] = added
        for link in list(self._links):
            link.attach(added)
        return name

    def remove(self, name: str) -> None:
        """Remove a toxic from every connection; raises KeyError for an unknown name."""
        del self._toxics[name]
        for link in list(self._links):
            link.detach(name)

    def clear(self) -> None:
        """Remove every toxic."""
        for name in list(self._toxics):
            self.remove(name)

    def stand_in_for(
        self, registration: Registration
    ) -> contextlib.AbstractAsyncContextManager[FaultProxy]:
        """Advertise this proxy in ``registration``'s place for an ``async with`` block,
        so callers dial the proxy; the instance's own address comes back after it.

        Raises ValueError when the proxy does not forward to that instance."""
        return _standing_in(self, registration)

    # -- connections --------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # start_server runs each connection in a task
        self._handlers.add(task)
        self.stats.accepted += 1
        try:
            try:
                upstream = await asyncio.wait_for(
                    asyncio.open_connection(self._up_host, self._up_port), self._connect_timeout
                )
            except (OSError, TimeoutError):
                writer.transport.abort()  # as Toxiproxy: the caller sees its connection drop
                return
            link = _Link(self, (reader, writer), upstream)
            self._links.add(link)
            for added in self._toxics.values():
                link.attach(added)
            try:
                await link.run()
            finally:
                self._links.discard(link)
        finally:
            self._handlers.discard(task)

    def _chain_order(self) -> list[str]:
        return list(self._toxics)

    def _count(self, direction: Direction, size: int) -> None:
        if direction is Direction.UPSTREAM:
            self.stats.upstream_bytes += size
        else:
            self.stats.downstream_bytes += size


@contextlib.asynccontextmanager
async def _standing_in(proxy: FaultProxy, registration: Registration) -> AsyncIterator[FaultProxy]:
    if proxy.upstream != registration.info.address:
        raise ValueError(
            f"the proxy forwards to {proxy.upstream}, the instance answers at "
            f"{registration.info.address}"
        )
    await registration.advertise(proxy.address)
    try:
        yield proxy
    finally:
        await registration.advertise(None)


@contextlib.asynccontextmanager
async def stand_in(
    registration: Registration, *, seed: int | None = None
) -> AsyncIterator[FaultProxy]:
    """A proxy in front of the instance of ``registration``, advertised in its place for
    an ``async with`` block: callers dial the proxy, whose toxics the block sets. After
    the block the instance's own address is published again and the proxy closed."""
    proxy = FaultProxy(registration.info.address, seed=seed)
    async with proxy, proxy.stand_in_for(registration):
        yield proxy


class _Link:
    """One proxied connection: the caller's socket, the upstream's, and two pumps."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.rng = proxy.rng
        self._readers = {Direction.UPSTREAM: client[0], Direction.DOWNSTREAM: upstream[0]}
        self._writers = {Direction.UPSTREAM: upstream[1], Direction.DOWNSTREAM: client[1]}
        self._stages: dict[str, Stage] = {}
        self._chains: dict[Direction, tuple[Stage, ...]] = {d: () for d in Direction}
        self._pumps: list[asyncio.Task[None]] = []
        self._closed = False

    def attach(self, added: AddedToxic) -> None:
        """Make ``added`` act on this connection (if its toxicity draw says so)."""
        if self.rng.random() >= added.toxicity:
            return
        stage = STAGES[type(added.toxic)](self, added)
        self._stages[added.name] = stage
        self._rebuild()
        stage.attached()

    def detach(self, name: str) -> None:
        stage = self._stages.pop(name, None)
        if stage is not None:
            self._rebuild()
            stage.detached()

    def _rebuild(self) -> None:
        order = [self._stages[n] for n in self.proxy._chain_order() if n in self._stages]
        self._chains = {d: tuple(s for s in order if s.added.direction is d) for d in Direction}

    async def run(self) -> None:
        """Pump both ways until both ends are closed, or the link is."""
        self._pumps = [
            asyncio.create_task(self._pump(direction), name=f"faultproxy:{direction.value}")
            for direction in Direction
        ]
        try:
            # Not gather: a pump cancelled by close() is an end, not a failure to raise.
            await asyncio.wait(self._pumps)
        finally:
            for task in self._pumps:
                task.cancel()
            await asyncio.wait(self._pumps)
            self.close()
        for task in self._pumps:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error  # a bug of the proxy: asyncio reports it for the connection

    async def _pump(self, direction: Direction) -> None:
        queue: asyncio.Queue[Chunk | None] = asyncio.Queue(_QUEUE_CHUNKS)
        reading = asyncio.create_task(self._read(direction, queue))
        writer = self._writers[direction]
        try:
            while (chunk := await queue.get()) is not None:
                await self._through(self._chains[direction], 0, direction, chunk)
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()  # half-close: the other direction may still talk
        except (LinkClosed, OSError):
            pass
        finally:
            reading.cancel()
            await asyncio.wait([reading])
            if not reading.cancelled() and (error := reading.exception()) is not None:
                raise error  # a bug of the proxy's: not to be lost with the connection

    async def _read(self, direction: Direction, queue: asyncio.Queue[Chunk | None]) -> None:
        reader = self._readers[direction]
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(_READ_SIZE):
                await queue.put(Chunk(data, loop.time()))
        except OSError:
            self.close()  # one side reset: so is the other, as the proxy is no end itself
        except Exception:  # a bug: end the connection, and let the pump raise it
            self.close()
            raise
        await queue.put(None)

    async def _through(
        self, chain: tuple[Stage, ...], index: int, direction: Direction, chunk: Chunk
    ) -> None:
        if index == len(chain):
            await self._write(direction, chunk.data)
            return

        async def send(piece: Chunk) -> None:
            await self._through(chain, index + 1, direction, piece)

        await chain[index].run(chunk, send)

    async def _write(self, direction: Direction, data: bytes) -> None:
        if self._closed:
            raise LinkClosed
        writer = self._writers[direction]
        writer.write(data)
        await writer.drain()
        self.proxy._count(direction, len(data))

    def close(self) -> None:
        """Close both sockets gracefully (what was written is still delivered)."""
        if self._closed:
            return
        self._closed = True
        for stage in self._stages.values():
            stage.detached_by_close()
        for writer in self._writers.values():
            writer.close()
        current = asyncio.current_task()
        for task in self._pumps:
            if task is not current:
                task.cancel()

    def reset(self) -> None:
        """Reset both sockets: each peer gets an RST and loses what was in flight."""
        for writer in self._writers.values():
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            writer.transport.abort()
        self.close()
