"""Refresh-to-socket: publish refresh events, time each to its feed.ready frame."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feedbench.cell import Cell
from feedbench.users import User


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank; NaN if empty."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class PushResult:
    published: int
    delivered: int
    latencies: list[float]  # seconds, sorted
    by_send: list[tuple[float, float]]  # (seconds after the first publish, latency)
    rate: float
    publish_errors: int
    unmatched: int
    sockets: int

    def q_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000.0

    def slices(self, width: float) -> str:
        """p50/p99 of the latencies of the events sent in each ``width``-second slice."""
        groups: dict[int, list[float]] = {}
        for sent, latency in self.by_send:
            groups.setdefault(int(sent // width), []).append(latency)
        parts = []
        for index in sorted(groups):
            values = sorted(groups[index])
            p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
            parts.append(f"{p50:.0f}/{p99:.0f}")
        return " ".join(parts)


async def refresh_to_socket(
    cell: Cell, users: Sequence[User], args: argparse.Namespace
) -> PushResult:
    import nats
    import orjson
    from websockets.asyncio.client import connect

    from learnfeed import contract
    from learnfeed.v1 import events_pb2

    targets = list(users[: args.push_users])
    pending: dict[str, deque[float]] = {u.user_id: deque() for u in targets}
    latencies: list[float] = []
    by_send: list[tuple[float, float]] = []
    clock = {"start": 0.0}
    counters = {"unmatched": 0, "total": -1}  # total: events published, once all are
    drained = asyncio.Event()
    perf = time.perf_counter
    sockets: list[Any] = []
    readers: list[asyncio.Task[None]] = []
    sem = asyncio.Semaphore(32)

    async def reader(user_id: str, ws: Any) -> None:
        queue = pending[user_id]
        with contextlib.suppress(Exception):
            async for raw in ws:
                now = perf()
                frame = orjson.loads(raw)
                if frame.get("type") != "feed.ready":
                    continue
                if queue:
                    sent = queue.popleft()
                    latencies.append(now - sent)
                    by_send.append((sent - clock["start"], now - sent))
                    if len(latencies) == counters["total"]:
                        drained.set()
                else:
                    counters["unmatched"] += 1

    async def open_socket(user: User) -> None:
        async with sem:
            ws = await connect(
                f"{cell.push_url}?access_token={user.token}", open_timeout=10, max_size=2**20
            )
            sockets.append(ws)
            await ws.send('{"type":"ping"}')  # answered after the hub has joined the user
            async with asyncio.timeout(10):
                while orjson.loads(await ws.recv()).get("type") != "pong":
                    pass
        readers.append(asyncio.create_task(reader(user.user_id, ws)))

    nc = await nats.connect(cell.nats_url(), name="bench-feed", connect_timeout=5)
    try:
        await asyncio.gather(*(open_socket(u) for u in targets))
        js = nc.jetstream()
        await asyncio.sleep(1.0)  # frames of refreshes asked for by earlier reads land first
        counters["unmatched"] = 0
        total = int(args.push_rate * args.push_duration)
        run = secrets.token_hex(4)
        errors = 0
        start = clock["start"] = perf()
        for k in range(total):
            delay = start + k / args.push_rate - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            user = targets[k % len(targets)]
            event = events_pb2.FeedRefreshRequested(
                user_id=user.user_id, reason="bench", requested_at=time.time()
            )
            pending[user.user_id].append(perf())
            try:
                await js.publish(
                    contract.REFRESH_REQUESTED,
                    event.SerializeToString(),
                    timeout=2.0,
                    headers={"Nats-Msg-Id": f"bench.{run}.{k}"},
                )
            except Exception:
                errors += 1
        rate = total / max(perf() - start, 1e-6)
        counters["total"] = total
        if len(latencies) >= total:
            drained.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), args.push_grace)
        latencies.sort()
        return PushResult(
            published=total,
            delivered=len(latencies),
            latencies=latencies,
            by_send=sorted(by_send),
            rate=rate,
            publish_errors=errors,
            unmatched=counters["unmatched"],
            sockets=len(sockets),
        )
    finally:
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await nc.close()
