"""NATS dies under load: the cell keeps serving reads, answers every interaction within its
deadline, heals, and loses or doubles no event it acknowledged (README, Resilience rows 1-2)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from cellwork.runtime.nats_server import NatsServer, free_port
from cellwork.testing.driver import Drive, OpenLoopDriver
from cellwork.testing.ledger import EventLedger, stream_copies
from tests.chaos.faults import (
    consumers,
    drive,
    load_rate,
    ms,
    registered_since,
    wait_for_nats,
)
from tests.chaos.learnfeed_cell import LearnfeedCell, start_cell
from tests.chaos.measured import record

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

STREAMS = ("FEED", "INTERACTIONS", "DEADLETTER")
DEADLINE = 2.0  # the gateway's per-request deadline (CELLWORK_CALL_TIMEOUT's default)
SLACK = 1.0  # seconds of a loaded machine between the gateway's deadline and our clock


async def settle_ledger(cell: LearnfeedCell, run: Drive) -> tuple[int, int, int]:
    """(accepted, lost, doubled) of the interactions answered 202."""
    ledger = EventLedger()
    for r in run.of("interaction"):
        if r.status == 202:
            ledger.accept(r.key)

    async def store() -> dict[str, int]:
        return await asyncio.to_thread(cell.stored_interactions)

    async def stream() -> dict[str, int]:
        return dict(
            await stream_copies(cell.nats_url(), "INTERACTIONS", "interaction.>", ledger.accepted)
        )

    report = await ledger.settle(store, stream, timeout=60)
    return report.accepted, len(report.lost), len(report.doubled)


def interaction_outcomes(run: Drive) -> tuple[int, int, int]:
    """(answered 202, answered 503 within the deadline, anything else)."""
    rows = run.of("interaction")
    accepted = sum(1 for r in rows if r.status == 202 and not r.error)
    refused = sum(
        1 for r in rows if r.status == 503 and not r.error and r.latency <= DEADLINE + SLACK
    )
    return accepted, refused, len(rows) - accepted - refused


async def test_the_cells_nats_killed_under_load(tmp_path: Path) -> None:
    cell = start_cell(tmp_path, "chaos-nats-kill")
    try:
        capacity, rate = await load_rate(cell)
        url = cell.nats_url()
        times: dict[str, float] = {}

        async def kill_nats(driver: OpenLoopDriver) -> None:
            await asyncio.sleep(8)
            # Times count from before the CLI runs: they include its own start (~0.5 s).
            killed_at, started = time.time(), time.monotonic()
            driver.mark("killed")
            done = await asyncio.to_thread(cell.cli, "chaos", "nats", "restart")
            assert done.returncode == 0, done.stdout + done.stderr
            await wait_for_nats(url)
            times["nats_back"] = time.monotonic() - started
            driver.mark("nats back")
            await registered_since(url, killed_at, cell.process.expected)
            times["registered"] = time.monotonic() - started
            driver.mark("registered")

        run = await drive(cell, rate, 40, kill_nats)
        recovered = run.marks["registered"] + 5.0  # a beat for balancers and caches
        accepted, refused, other = interaction_outcomes(run)
        ledger = await settle_ledger(cell, run)
        record(
            "1. the cell's nats-server SIGKILLed under reads and interactions",
            capacity_rps=capacity,
            rate_rps=rate,
            reads=len(run.of("feed")),
            failed_reads=len(run.failed("feed", (200,))),
            dropped=run.dropped,
            interactions_202=accepted,
            interactions_503_in_deadline=refused,
            interactions_other=other,
            nats_back_ms=ms(times["nats_back"]),
            all_registered_ms=ms(times["registered"]),
            read_p99_ms=ms(run.latency("feed", 0.99)),
            ledger_accepted_lost_doubled=ledger,
            client_lag_p99_ms=ms(run.lag_p99),
        )
        assert run.dropped == 0  # no request waited so long that the in-flight bound filled
        assert run.failed("feed", (200,)) == []
        assert other == 0, [r for r in run.of("interaction") if r.status not in (202, 503)][:5]
        assert run.failed("feed", (200,), after=recovered) == []
        assert run.failed("interaction", (202,), after=recovered) == []
        assert ledger[1:] == (0, 0)
    finally:
        assert cell.process.stop() == 0, cell.process.log_tail()


async def test_an_external_nats_stopped_and_started_empty(tmp_path: Path) -> None:
    store = tmp_path / "nats"
    server = NatsServer(store, port=free_port()).start()
    try:
        cell = start_cell(tmp_path / "cell", "chaos-nats-wipe", nats_url=server.url)
        try:
            capacity, rate = await load_rate(cell)
            before = await consumers(server.url, STREAMS)
            times: dict[str, float] = {}

            async def wipe_nats(driver: OpenLoopDriver) -> None:
                await asyncio.sleep(5)
                driver.mark("stopped")
                await asyncio.to_thread(server.stop)
                shutil.rmtree(store / "jetstream", ignore_errors=True)
                await asyncio.sleep(20)  # the outage the scenario is about
                restarted_at = time.time()
                await asyncio.to_thread(server.start)
                driver.mark("started empty")
                times["registered"] = await registered_since(
                    server.url, restarted_at, cell.process.expected
                )
                driver.mark("registered")

            run = await drive(cell, rate, 45, wipe_nats)
            after = await consumers(server.url, STREAMS)
            record(
                "2. an external NATS stopped for 20 s, started again empty",
                capacity_rps=capacity,
                rate_rps=rate,
                reads=len(run.of("feed")),
                failed_reads=len(run.failed("feed", (200,))),
                dropped=run.dropped,
                all_registered_ms=ms(times["registered"]),
                read_p99_ms=ms(run.latency("feed", 0.99)),
                consumers_recreated=after == before,
                client_lag_p99_ms=ms(run.lag_p99),
            )
            assert run.dropped == 0
            failed = run.failed("feed", (200,))
            assert failed == [], sorted({(r.status, r.detail) for r in failed})
            assert after == before
        finally:
            assert cell.process.stop() == 0, cell.process.log_tail()
    finally:
        server.stop()
