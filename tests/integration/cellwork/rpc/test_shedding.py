"""Shedding at real echo servers: what is over a method's concurrency limit is refused at once
as Overloaded, counted and timed; what is under it is served."""

import asyncio
import time
import urllib.request

import pytest

from cellwork import errors
from cellwork.rpc.shedding import SERVER_LIMITS, SHED_RETRY_AFTER
from cellwork.testing.v1 import echo_pb2
from tests.waiting import BOUND, wait_until

DELAY_MS = 2000  # the admitted calls hold their slots this long


async def scrape(port: int) -> str:
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    )
    return body.decode()


def sample(text: str, name: str, method: str) -> float:
    found = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and f'method="{method}"' in line and 'service="echo"' in line
    ]
    assert found, f"{name} for {method} not in /metrics"
    return found[0]


async def test_calls_over_the_limit_are_refused_at_once_as_overloaded(client, two_echoes):
    capacity = SERVER_LIMITS.initial * len(two_echoes)  # nothing has moved the limits yet
    calls = capacity * 2

    async def one() -> tuple[str, float, float | None]:
        started = time.monotonic()
        try:
            await client.call("Echo", echo_pb2.EchoRequest(delay_ms=DELAY_MS), timeout=BOUND)
        except errors.ResourceExhausted as refused:  # how a caller backs off
            kind = "overloaded" if isinstance(refused, errors.Overloaded) else "rate_limited"
            return kind, time.monotonic() - started, refused.retry_after
        return "ok", time.monotonic() - started, None

    outcomes = await asyncio.gather(*(one() for _ in range(calls)))
    kinds = [kind for kind, _, _ in outcomes]
    assert set(kinds) <= {"ok", "overloaded"}
    assert 0 < kinds.count("ok") <= capacity
    assert kinds.count("overloaded") >= calls - capacity
    refused = [(took, after) for kind, took, after in outcomes if kind == "overloaded"]
    assert {after for _, after in refused} == {SHED_RETRY_AFTER}
    # Refused while the admitted calls still held their slots: not queued behind them.
    assert [took for took, _ in refused if took >= DELAY_MS / 1000 / 2] == []

    limiters = [echo.server.limiters["Echo/Echo"] for echo in two_echoes]
    await wait_until(lambda: all(lim.in_flight == 0 for lim in limiters), "every slot freed")
    assert sum(lim.shed for lim in limiters) == kinds.count("overloaded")

    # Both in-process servers share one registry: its series hold both servers' figures.
    text = await scrape(two_echoes[0].metrics_port)
    assert sample(text, "cellwork_rpc_server_shed_total", "Echo/Echo") >= kinds.count("overloaded")
    assert sample(text, "cellwork_rpc_server_concurrency_limit", "Echo/Echo") >= 1
    assert sample(text, "cellwork_rpc_server_refusal_seconds_count", "Echo/Echo") >= kinds.count(
        "overloaded"
    )


async def test_calls_under_the_limit_are_all_served(client, two_echoes):
    calls = SERVER_LIMITS.min_limit  # under the limit whatever it learnt
    replies = await asyncio.gather(
        *(
            client.call("Echo", echo_pb2.EchoRequest(payload=b"x", delay_ms=200), timeout=BOUND)
            for _ in range(calls)
        )
    )
    assert [r.payload for r in replies] == [b"x"] * calls
    assert sum(echo.server.limiters["Echo/Echo"].shed for echo in two_echoes) == 0


async def test_a_shed_method_does_not_take_the_slots_of_another(client, two_echoes):
    calls = SERVER_LIMITS.initial * len(two_echoes) * 2
    slow = [
        asyncio.create_task(
            client.call("Echo", echo_pb2.EchoRequest(delay_ms=DELAY_MS), timeout=BOUND)
        )
        for _ in range(calls)
    ]
    limiters = [echo.server.limiters for echo in two_echoes]
    await wait_until(
        lambda: all("Echo/Echo" in lim and lim["Echo/Echo"].shed > 0 for lim in limiters),
        "Echo to shed on both servers",
    )
    # Fail's handler runs (and answers what it is asked to), though Echo is full.
    with pytest.raises(errors.NotFound):
        await client.call("Fail", echo_pb2.EchoRequest(payload=b"NotFound"), timeout=BOUND)
    results = await asyncio.gather(*slow, return_exceptions=True)
    assert all(isinstance(r, echo_pb2.EchoResponse | errors.Overloaded) for r in results)
