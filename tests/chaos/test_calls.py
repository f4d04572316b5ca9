"""Calls that keep answering while parts of the cell die, hang, slow down or fail
(README, Resilience: the call pipeline's rows).

Each scenario states its cache settings: the gateway's feed copies (and, where the
catalog is the subject, its item copies) are off, so every read makes the hops the
scenario is about.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cellwork.testing.driver import OpenLoopDriver
from tests.chaos.faults import drive, eventually, load_rate, ms
from tests.chaos.learnfeed_cell import start_cell
from tests.chaos.measured import record

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

FEED_COPIES_OFF = {"CELLWORK_GATEWAY_FEED_CACHE": "false"}


async def test_a_feed_instance_killed_every_two_seconds(tmp_path: Path) -> None:
    cell = start_cell(tmp_path, "chaos-kill-loop", FEED_COPIES_OFF, replicas={"feed": 3})
    try:
        capacity, rate = await load_rate(cell)
        killed: list[int] = []  # pids: a slot keeps its instance id across restarts

        async def kill_round_robin(driver: OpenLoopDriver) -> None:
            await asyncio.sleep(3)
            driver.mark("first kill")
            for n in range(15):  # one every 2 s for 30 s
                tick = asyncio.create_task(asyncio.sleep(2))
                serving = {i["id"]: i for i in await cell.instances("feed")}
                victim = serving.get(f"feed-{n % 3}")
                if victim is not None and victim["pid"] not in killed:
                    await cell.control("kill", service="feed", instance=victim["id"])
                    killed.append(victim["pid"])
                await tick
            driver.mark("last kill")

        run = await drive(cell, rate, 38, kill_round_robin)

        async def replaced() -> bool:
            serving = await cell.instances("feed")
            return len(serving) == 3 and not {i["pid"] for i in serving} & set(killed)

        await eventually(replaced, "every killed feed instance replaced", timeout=60)
        failed = run.failed("feed", (200,))
        record(
            "calls 1. a feed instance SIGKILLed every 2 s (3 instances, feed copies off)",
            capacity_rps=capacity,
            rate_rps=rate,
            kills=len(killed),
            reads=len(run.of("feed")),
            failed_reads=len(failed),
            dropped=run.dropped,
            read_p99_ms=ms(run.latency("feed", 0.99)),
            client_lag_p99_ms=ms(run.lag_p99),
        )
        assert len(killed) >= 12  # the loop really killed (some rounds find one restarting)
        assert run.dropped == 0
        assert failed == [], sorted({(r.status, r.error, r.detail) for r in failed})
        assert run.failed("interaction", (202,)) == []
    finally:
        assert cell.process.stop() == 0, cell.process.log_tail()
