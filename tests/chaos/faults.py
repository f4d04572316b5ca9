"""What the fault scenarios share: the load mix, conclusive runs, and NATS-side checks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable

import nats
from nats.js.errors import NotFoundError
from prometheus_client.parser import text_string_to_metric_families

from cellwork.testing.capacity import measure_capacity
from cellwork.testing.driver import Answer, Drive, OpenLoopDriver, drive_during
from cellwork.testing.httpload import LoadClient
from tests.chaos.learnfeed_cell import LearnfeedCell
from tests.waiting import wait_until

LOAD_SHARE = 0.4  # of the capacity measured first in the same run
CLIENT_CEILING = 120.0  # requests a second this Python client keeps on schedule beside a cell
MAX_LAG_P99 = 0.5  # seconds late at p99 before a run measured the client, not the cell
ATTEMPTS = 3  # runs whose client fell behind are repeated this often before giving up
BUCKET = "cellwork_registry"
CONNECTIONS = 512

Fault = Callable[[OpenLoopDriver], Awaitable[None]]


async def load_rate(cell: LearnfeedCell, path: str = "/v1/feed?limit=20") -> tuple[float, float]:
    """(capacity of the read at ``path`` in reads/s, the open-loop rate to drive at)."""
    capacity = await measure_capacity(
        f"{cell.http}{path}",
        {"Authorization": f"Bearer {cell.first_token()}"},
        seconds=4,
    )
    await settled(cell, "gateway")
    return capacity, round(min(capacity * LOAD_SHARE, CLIENT_CEILING), 1)


async def settled(cell: LearnfeedCell, service: str) -> None:
    """Wait until the instances' event loops are punctual again after the capacity run
    saturated them: the edge sheds on that lag, so load driven at once would meet the
    end of the measure, not the fault."""

    async def punctual() -> bool:
        texts = (await cell.metrics(service)).values()
        return all(sample_sum([text], "cellwork_event_loop_lag_seconds") < 0.02 for text in texts)

    await eventually(punctual, f"{service}'s event loops punctual again", timeout=30)


Mix = Callable[[LoadClient, int], Awaitable[Answer]]


async def drive(
    cell: LearnfeedCell,
    rate: float,
    duration: float,
    fault: Fault,
    *,
    interactions: int = 5,
    mix: Mix | None = None,
) -> Drive:
    """Reads and (one in ``interactions``) interactions at ``rate`` while ``fault`` runs;
    or, given ``mix``, the request ``await mix(client, index)`` makes.

    Raises AssertionError naming the client's lag when every attempt fell behind: such a
    run measured the client, not the cell.
    """
    drives = []
    for _attempt in range(ATTEMPTS):
        async with LoadClient(cell.http, connections=CONNECTIONS) as client:

            async def request(index: int) -> Answer:
                if mix is not None:
                    return await mix(client, index)
                if index % interactions == interactions - 1:
                    return await cell.interact(client)
                return await cell.read(client)

            driver = OpenLoopDriver(rate, duration, request, max_lag_p99=MAX_LAG_P99)
            result = await drive_during(driver, fault)
        if not result.behind:
            return result
        drives.append(result)
    raise AssertionError(
        "inconclusive: the load client fell behind its own schedule in every attempt "
        f"(lag p99 {[round(d.lag_p99, 3) for d in drives]} s)"
    )


async def wait_for_nats(url: str, timeout: float = 30.0) -> float:
    """Seconds until ``url`` accepts a connection again."""
    started = time.monotonic()
    while True:
        try:
            nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0)
        except Exception:
            if time.monotonic() - started > timeout:
                raise
            await asyncio.sleep(0.1)
            continue
        await nc.close()
        return time.monotonic() - started


async def registered_since(url: str, since: float, expected: int, timeout: float = 30.0) -> float:
    """Seconds until ``expected`` instances have put their record after wall time ``since``."""
    started = time.monotonic()
    while True:
        fresh = 0
        with contextlib.suppress(Exception):
            fresh = await _fresh_records(url, since)
        if fresh >= expected:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{fresh} of {expected} instances registered again in {timeout} s")
        await asyncio.sleep(0.25)


async def _fresh_records(url: str, since: float) -> int:
    # A watch, not kv.get: only watched entries carry the time they were put.
    nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0)
    try:
        kv = await nc.jetstream(timeout=2).key_value(BUCKET)
        watcher = await kv.watch(">", ignore_deletes=True)
        fresh = 0
        try:
            while True:
                entry = await watcher.updates(timeout=2.0)
                if entry is None:
                    break
                created = entry.created
                if entry.value and created is not None and created.timestamp() > since:
                    fresh += 1
                if entry.delta == 0:
                    break
        finally:
            await watcher.stop()
        return fresh
    finally:
        await nc.close()


async def consumers(url: str, streams: tuple[str, ...]) -> dict[str, set[str] | None]:
    """The durable consumers of each of ``streams`` (None for a missing stream)."""
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=2)
        found: dict[str, set[str] | None] = {}
        for stream in streams:
            try:
                infos = await js.consumers_info(stream)
            except NotFoundError:
                found[stream] = None
                continue
            found[stream] = {i.config.durable_name or "" for i in infos} - {""}
        return found
    finally:
        await nc.close()


def sample_sum(texts: Iterable[str], name: str, **labels: str) -> float:
    """The sum over ``texts`` (Prometheus text of several instances) of the samples
    called ``name`` whose labels include ``labels``."""
    total = 0.0
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
    return total


def ms(seconds: float) -> int:
    return round(seconds * 1000)


async def stream_messages(url: str, stream: str) -> int:
    """How many messages ``stream`` holds now."""
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        info = await nc.jetstream(timeout=2).stream_info(stream)
        return int(info.state.messages)
    finally:
        await nc.close()


async def consumer_lag(url: str, stream: str, durable: str) -> int:
    """Messages of ``durable`` not yet handled: pending plus delivered and not acked."""
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        info = await nc.jetstream(timeout=2).consumer_info(stream, durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    finally:
        await nc.close()


async def publish(url: str, subject: str, payloads: list[tuple[bytes, str]]) -> None:
    """Publish (payload, Nats-Msg-Id) pairs to the stream that holds ``subject``."""
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=5)
        for payload, msg_id in payloads:
            await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
    finally:
        await nc.close()


async def eventually(
    condition: Callable[[], object | Awaitable[object]],
    what: str,
    timeout: float = 60.0,
    every: float = 0.5,
) -> None:
    """``tests.waiting.wait_until`` at a pace fit for what polls a cell: a CLI run, a
    database file, a NATS connection each time."""
    await wait_until(condition, what, timeout=timeout, every=every)
