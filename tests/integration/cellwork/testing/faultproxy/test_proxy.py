"""The fault proxy on real sockets: raw TCP to a small echo server for byte-exact
checks, and a real echo service behind a balanced client for what callers see.

Times are asserted only from below (a toxic adds at least its delay); on a busy
machine anything may take longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from cellwork.errors import DeadlineExceeded, Unavailable
from cellwork.rpc import connect_client
from cellwork.service import Service
from cellwork.testing import start_service
from cellwork.testing.echo import create_service
from cellwork.testing.faultproxy import (
    Bandwidth,
    Direction,
    FaultProxy,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    Timeout,
    stand_in,
)
from cellwork.testing.v1 import echo_pb2
from cellwork.testing.v1.echo_client import EchoClient
from tests.waiting import wait_until

# -- raw TCP ------------------------------------------------------------------------------


@pytest.fixture
async def tcp_echo() -> AsyncIterator[str]:
    """A TCP server that sends back what it reads, and closes when the peer does."""
    handlers: set[asyncio.Task[None]] = set()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            handlers.discard(task)

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    for task in list(handlers):
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    await server.wait_closed()


@contextlib.asynccontextmanager
async def dial(
    proxy: FaultProxy,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, _, port = proxy.address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()


async def read_to_end(reader: asyncio.StreamReader) -> tuple[bytes, int]:
    """Everything until EOF, and in how many reads it came."""
    received, reads = b"", 0
    while data := await asyncio.wait_for(reader.read(65536), 30):
        received += data
        reads += 1
    return received, reads


async def test_bytes_flow_both_ways_and_are_counted_each_way(tcp_echo):
    payload = bytes(range(256)) * 40
    async with FaultProxy(tcp_echo) as proxy, dial(proxy) as (reader, writer):
        writer.write(payload)
        writer.write_eof()  # the echo server closes after answering: so does the proxy
        received, _ = await read_to_end(reader)
        assert received == payload
        assert proxy.stats.accepted == 1
        assert proxy.stats.upstream_bytes == len(payload)
        assert proxy.stats.downstream_bytes == len(payload)
        await wait_until(lambda: proxy.connections == 0, "the proxied connection to close")


async def test_limit_data_passes_the_first_bytes_then_closes(tcp_echo):
    payload = bytes(range(256)) * 4
    async with FaultProxy(tcp_echo) as proxy, dial(proxy) as (reader, writer):
        proxy.add(LimitData(100))
        writer.write(payload)
        received, _ = await read_to_end(reader)  # no write_eof: only the limit ends it
        assert received == payload[:100]
        assert proxy.stats.downstream_bytes == 100


async def test_a_toxic_acts_only_on_the_share_of_connections_its_toxicity_says(tcp_echo):
    async with FaultProxy(tcp_echo, seed=1) as proxy:
        proxy.add(LimitData(0), toxicity=0.0)
        async with dial(proxy) as (reader, writer):
            writer.write(b"hello")
            writer.write_eof()
            assert (await read_to_end(reader))[0] == b"hello"


async def test_reset_peer_resets_the_connection_with_an_rst(tcp_echo):
    async with FaultProxy(tcp_echo) as proxy, dial(proxy) as (reader, writer):
        proxy.add(ResetPeer(), direction=Direction.UPSTREAM)
        writer.write(b"hello")
        with pytest.raises(ConnectionResetError):  # an RST, not an orderly EOF
            await read_to_end(reader)
        assert proxy.stats.upstream_bytes == 0


async def test_a_timeout_swallows_the_data_and_closes_the_connection_after_it(tcp_echo):
    async with FaultProxy(tcp_echo) as proxy, dial(proxy) as (reader, writer):
        started = time.monotonic()
        proxy.add(Timeout(200), direction=Direction.UPSTREAM)
        writer.write(b"into the hole")
        received, _ = await read_to_end(reader)
        assert received == b""
        assert time.monotonic() - started >= 0.2
        assert proxy.stats.upstream_bytes == 0


async def test_the_slicer_delivers_the_data_intact_in_pieces_apart(tcp_echo):
    payload = bytes(range(256)) * 40  # 10,240 bytes: 128 pieces of 80 bytes
    async with FaultProxy(tcp_echo, seed=7) as proxy, dial(proxy) as (reader, writer):
        proxy.add(Slicer(average_size=100, delay_us=2_000))
        started = time.monotonic()
        writer.write(payload)
        writer.write_eof()
        received, reads = await read_to_end(reader)
        assert received == payload
        assert reads > 1
        assert time.monotonic() - started >= 127 * 0.002


async def test_close_closes_every_proxied_connection(tcp_echo):
    proxy = FaultProxy(tcp_echo)
    await proxy.start()
    async with dial(proxy) as (reader, writer):
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 30) == b"ping"
        await proxy.close()
        assert await asyncio.wait_for(reader.read(), 30) == b""
        assert proxy.connections == 0


async def test_toxic_names_are_unique_and_removal_needs_a_known_name(tcp_echo):
    async with FaultProxy(tcp_echo) as proxy:
        assert proxy.add(Latency(10)) == "latency_downstream"
        assert proxy.add(Latency(10), direction=Direction.UPSTREAM) == "latency_upstream"
        with pytest.raises(ValueError):
            proxy.add(Latency(20))
        with pytest.raises(ValueError):
            proxy.add(Latency(20), name="other", toxicity=2.0)
        proxy.remove("latency_downstream")
        assert [t.name for t in proxy.toxics] == ["latency_upstream"]
        with pytest.raises(KeyError):
            proxy.remove("latency_downstream")
        proxy.clear()
        assert proxy.toxics == []


# -- in front of a real instance ------------------------------------------------------------


@pytest.fixture
async def echo(nats_server) -> AsyncIterator[Service]:
    service = await start_service(create_service, nats_server.url, instance_id="echo-0")
    yield service
    await service.close()


@pytest.fixture
async def client(registry, echo) -> AsyncIterator[EchoClient]:
    client = await connect_client(registry, "echo", EchoClient, caller="test")
    await client.balancer.wait_for_endpoints(1)
    yield client
    await client.close()


def dialled(client: EchoClient) -> set[str]:
    return {endpoint.info.address for endpoint in client.balancer.endpoints}


@pytest.fixture
async def proxied(echo, client) -> AsyncIterator[FaultProxy]:
    """The echo instance behind a proxy its callers dial."""
    assert echo.registration is not None
    async with stand_in(echo.registration, seed=3) as proxy:
        await wait_until(lambda: dialled(client) == {proxy.address}, "the client to dial the proxy")
        yield proxy


def request(payload: bytes = b"x", **fields: object) -> echo_pb2.EchoRequest:
    return echo_pb2.EchoRequest(payload=payload, **fields)


async def answers(client: EchoClient) -> bool:
    try:
        await client.echo(request(b"ok"), timeout=2.0)
    except (Unavailable, DeadlineExceeded):
        return False
    return True


async def test_a_balanced_clients_calls_go_through_the_proxy_while_it_stands_in(echo, client):
    assert echo.registration is not None
    own = echo.info.address
    async with FaultProxy(own) as proxy:
        await echo.registration.advertise(proxy.address)
        await wait_until(lambda: dialled(client) == {proxy.address}, "the client to dial the proxy")
        before = proxy.stats.downstream_bytes
        reply = await client.echo(request(b"through"))
        assert reply.payload == b"through" and reply.instance_id == "echo-0"
        assert proxy.stats.accepted >= 1 and proxy.stats.downstream_bytes > before

        await echo.registration.advertise(None)
        await wait_until(lambda: dialled(client) == {own}, "the client to dial the instance again")
        await wait_until(lambda: proxy.connections == 0, "the channel to the proxy to close")
        seen = (proxy.stats.accepted, proxy.stats.upstream_bytes, proxy.stats.downstream_bytes)
        for _ in range(10):
            assert (await client.echo(request(b"direct"))).payload == b"direct"
        assert (
            proxy.stats.accepted,
            proxy.stats.upstream_bytes,
            proxy.stats.downstream_bytes,
        ) == seen


async def test_standing_in_requires_a_proxy_to_that_instance(echo, tcp_echo):
    assert echo.registration is not None
    async with FaultProxy(tcp_echo) as proxy:
        with pytest.raises(ValueError):
            async with proxy.stand_in_for(echo.registration):
                pass


async def test_a_large_payload_comes_back_intact_through_proxy_and_slicer(client, proxied):
    payload = bytes(range(256)) * 256  # 64 KiB
    assert (await client.echo(request(payload))).payload == payload
    assert proxied.stats.upstream_bytes >= len(payload)
    assert proxied.stats.downstream_bytes >= len(payload)
    proxied.add(Slicer(average_size=500, size_variation=100), direction=Direction.UPSTREAM)
    proxied.add(Slicer(average_size=500, size_variation=100))
    assert (await client.echo(request(payload))).payload == payload


async def test_latency_adds_at_least_its_delay_each_way(client, proxied):
    await client.echo(request())  # connected
    proxied.add(Latency(300))
    started = time.monotonic()
    await client.echo(request())
    assert time.monotonic() - started >= 0.3

    proxied.add(Latency(200, jitter_ms=0), direction=Direction.UPSTREAM)
    started = time.monotonic()
    await client.echo(request())
    assert time.monotonic() - started >= 0.5


async def test_reset_peer_fails_calls_with_unavailable_until_removed(client, proxied):
    await client.echo(request())
    proxied.add(ResetPeer())
    with pytest.raises(Unavailable):
        await client.echo(request())
    proxied.remove("reset_peer_downstream")
    await wait_until(lambda: answers(client), "calls to be answered again")


async def test_a_black_hole_makes_calls_miss_their_deadline_until_removed(client, proxied):
    await client.echo(request())
    proxied.add(Timeout())
    with pytest.raises(DeadlineExceeded):
        await client.echo(request(), timeout=0.5)
    assert proxied.connections >= 1  # held open, not closed
    proxied.remove("timeout_downstream")  # closes what it swallowed from
    await wait_until(lambda: answers(client), "calls to be answered again")


async def test_limit_data_cuts_an_answer_short_and_the_call_fails(client, proxied):
    await client.echo(request())
    proxied.add(LimitData(1_000))
    with pytest.raises(Unavailable):
        await client.echo(request(bytes(10_000)))
    proxied.remove("limit_data_downstream")
    await wait_until(lambda: answers(client), "calls to be answered again")


async def test_bandwidth_slows_a_large_answer_to_its_rate(client, proxied):
    payload = bytes(100_000)
    await client.echo(request())
    proxied.add(Bandwidth(rate_kb=100))  # 100,000 bytes/s: the answer takes >= 1 s
    started = time.monotonic()
    reply = await client.echo(request(payload), timeout=30.0)
    assert time.monotonic() - started >= 0.9  # the loop's timers may fire a hair early
    assert reply.payload == payload
