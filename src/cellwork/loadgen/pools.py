"""HTTP connection pools sized for a load run, for scenarios that speak HTTP."""

from __future__ import annotations

import contextlib
import itertools
import math
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, overload

import httpx

from cellwork.loadgen.scenario import RunContext

# httpcore's pool does work quadratic in its connections on every request: many small
# pools (users spread over them) keep a client core's CPU for the requests themselves.
POOL_SIZE = 16


class HttpPools(Sequence[httpx.AsyncClient]):
    """Enough small ``httpx`` clients for the run's in-flight bound; ``next()`` takes turns.

    Pin a user to one pool (``pools[i % len(pools)]``) to keep its connections warm.
    """

    __slots__ = ("_clients", "_turns")

    def __init__(self, clients: Sequence[httpx.AsyncClient]) -> None:
        if not clients:
            raise ValueError("HttpPools needs at least one client")
        self._clients = tuple(clients)
        self._turns = itertools.cycle(self._clients)

    def next(self) -> httpx.AsyncClient:
        """The next client in turn."""
        return next(self._turns)

    @overload
    def __getitem__(self, index: int) -> httpx.AsyncClient: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[httpx.AsyncClient]: ...
    def __getitem__(self, index: int | slice) -> httpx.AsyncClient | Sequence[httpx.AsyncClient]:
        return self._clients[index]

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[httpx.AsyncClient]:
        return iter(self._clients)


@contextlib.asynccontextmanager
async def http_pools(
    run: RunContext, base_url: str = "", **client: Any
) -> AsyncIterator[HttpPools]:
    """Open the clients of a run (HTTP/1.1 keep-alive, the run's timeout); close them on exit.

    ``client`` passes further ``httpx.AsyncClient`` arguments (headers, cookies, ...).
    """
    size = min(POOL_SIZE, run.max_in_flight)
    tls = ssl.create_default_context()  # once for all pools: loading the CA bundle takes ~20 ms
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=base_url,
                    timeout=run.timeout,
                    verify=tls,
                    limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                    http1=True,
                    http2=False,
                    **client,
                )
            )
            for _ in range(math.ceil(run.max_in_flight / size))
        ]
        yield HttpPools(clients)
