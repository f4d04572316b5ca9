"""The smallest scenario: one method on one URL, and the example to copy for your own.

    cellwork loadgen --scenario cellwork.loadgen.http --url http://127.0.0.1:8080/healthz \\
        --rate 500 --duration 30

A scenario for a service with several routes keeps this shape: a ``session`` that
opens clients (and signs up users, when it needs them), a ``perform`` that picks a
route with ``cellwork.loadgen.Mix`` and returns its ``Outcome``, and options
declared as the parameters of ``create_scenario``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
import typer

from cellwork.loadgen.pools import HttpPools, http_pools
from cellwork.loadgen.scenario import Outcome, RunContext, Scenario

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class OneUrl(Scenario[HttpPools]):
    """Every request is ``method url`` with the same body and headers."""

    def __init__(
        self,
        url: str,
        method: str = "GET",
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url, self.method, self.body, self.headers = url, method, body, headers or {}
        self.route = f"{method} {httpx.URL(url).path}"

    @asynccontextmanager
    async def session(self, run: RunContext) -> AsyncIterator[HttpPools]:
        async with http_pools(run, headers=self.headers) as pools:
            yield pools

    async def perform(self, state: HttpPools) -> Outcome:
        try:
            response = await state.next().request(self.method, self.url, content=self.body)
        except httpx.HTTPError as exc:
            return Outcome.failure(self.route, exc)
        return Outcome.of_status(self.route, response.status_code)


def create_scenario(
    url: Annotated[str, typer.Option(help="the URL every request goes to")],
    method: Annotated[str, typer.Option(help=f"one of {', '.join(METHODS)}")] = "GET",
    body: Annotated[str, typer.Option(help="the request body, sent as is")] = "",
    header: Annotated[list[str] | None, typer.Option(help="'Name: value', once per header")] = None,
) -> OneUrl:
    """Send one method to one URL; any 2xx answer counts as ok."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"--url {url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"--url must be an http:// or https:// URL with a host, not {url!r}")
    if method.upper() not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    headers = {}
    for line in header or ():
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header {line!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    return OneUrl(url, method.upper(), body.encode(), headers)
