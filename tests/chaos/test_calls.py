"""Calls that keep answering while parts of the cell die, hang, slow down or fail
(README, Resilience: the call pipeline's rows).

Each scenario states its cache settings: the gateway's feed copies (and, where the
catalog is the subject, its item copies) are off, so every read makes the hops the
scenario is about.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import nats
import pytest

from cellwork.discovery.instance import InstanceInfo
from cellwork.testing.capacity import measure_capacity
from cellwork.testing.driver import Answer, OpenLoopDriver
from cellwork.testing.httpload import LoadClient
from tests.chaos.faults import CLIENT_CEILING, Mix, drive, eventually, load_rate, ms, sample_sum
from tests.chaos.learnfeed_cell import LearnfeedCell, start_cell
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


ITEMS_OFF = {**FEED_COPIES_OFF, "CELLWORK_GATEWAY_ITEMS_CACHE": "false"}


async def cli_ok(cell: LearnfeedCell, *args: str) -> None:
    done = await asyncio.to_thread(cell.cli, *args)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_the_catalog_slowed_by_two_seconds(tmp_path: Path) -> None:
    cell = start_cell(tmp_path, "chaos-slow-catalog", ITEMS_OFF)
    try:
        capacity, rate = await load_rate(cell, "/v1/home")

        async def home(client: LoadClient, index: int) -> Answer:
            return await cell.home(client)

        async def full_again() -> bool:
            async with LoadClient(cell.http, connections=1) as probe:
                answer = await cell.home(probe)
            return answer.status == 200 and not {"items", "feed"} & set(answer.detail.split(","))

        async def slow_catalog(driver: OpenLoopDriver) -> None:
            await asyncio.sleep(4)
            await cli_ok(cell, "chaos", "delay", "catalog", "2000")
            driver.mark("slow")
            await asyncio.sleep(15)
            await cli_ok(cell, "chaos", "clear", "catalog")
            driver.mark("cleared")
            await eventually(full_again, "full /v1/home answers again", timeout=30, every=0.25)
            driver.mark("full again")

        run = await drive(cell, rate, 40, slow_catalog, mix=home)
        gateways = (await cell.metrics("gateway")).values()
        opened = sample_sum(
            gateways, "cellwork_breaker_transitions_total", service="catalog", state="open"
        )
        slow = run.of("home", after=run.marks["slow"] + 1.0, before=run.marks["cleared"])
        # The load's users are not in identity (their tokens are minted for the test), so
        # every answer names "profile"; the catalog's part is "items" (bare items), or
        # "feed" when the feed head missed its own deadline on this loaded machine.
        not_partial = [
            r for r in slow if r.status != 200 or not {"items", "feed"} & set(r.detail.split(","))
        ]
        record(
            "calls 3. the catalog slowed by 2 s (feed copies and item cache off), /v1/home",
            capacity_rps=capacity,
            rate_rps=rate,
            home_reads=len(run.of("home")),
            while_slow=len(slow),
            while_slow_without_partial_items=len(not_partial),
            their_answers=sorted({(r.status, r.detail) for r in not_partial})[:5],
            failed=len(run.failed("home", (200,))),
            breaker_opened=opened,
            full_again_after_clear_ms=ms(run.marks["full again"] - run.marks["cleared"]),
            home_p99_while_slow_ms=ms(
                run.latency(
                    "home", 0.99, after=run.marks["slow"] + 1.0, before=run.marks["cleared"]
                )
            ),
            client_lag_p99_ms=ms(run.lag_p99),
        )
        assert run.failed("home", (200,)) == []
        assert slow and not_partial == [], sorted({(r.status, r.detail) for r in not_partial})
        assert opened >= 1
    finally:
        assert cell.process.stop() == 0, cell.process.log_tail()


async def test_feed_failing_every_call_for_thirty_seconds(tmp_path: Path) -> None:
    cell = start_cell(tmp_path, "chaos-failing-feed", FEED_COPIES_OFF)
    try:
        capacity, rate = await load_rate(cell)

        async def reads(client: LoadClient, index: int) -> Answer:
            return await cell.read(client)

        async def fail_feed(driver: OpenLoopDriver) -> None:
            await asyncio.sleep(5)
            await cli_ok(cell, "chaos", "fail", "feed", "1.0")
            driver.mark("failing")
            await asyncio.sleep(30)
            await cli_ok(cell, "chaos", "clear", "feed")
            driver.mark("recovered")

        run = await drive(cell, rate, 50, fail_feed, mix=reads)
        feeds = (await cell.metrics("feed")).values()
        attempts = sample_sum(feeds, "cellwork_faults_injected_total", kind="fail")
        failing = run.of("feed", after=run.marks["failing"], before=run.marks["recovered"])
        after = run.of("feed", after=run.marks["recovered"] + 10.0)
        slow_errors = [r for r in failing if r.status != 200 and (r.error or r.latency > 1.0)]
        record(
            "calls 4. feed failing every call for 30 s (feed copies off)",
            capacity_rps=capacity,
            rate_rps=rate,
            reads_while_failing=len(failing),
            attempts_seen_by_feed=attempts,
            attempts_allowed=round(1.2 * len(failing) + 300),
            answered_200_while_failing=sum(1 for r in failing if r.status == 200),
            answered_503_while_failing=sum(1 for r in failing if r.status == 503),
            slow_or_other_errors=len(slow_errors),
            success_after_recovery_plus_10s=f"{sum(1 for r in after if r.ok((200,)))}/{len(after)}",
            read_p99_ms=ms(run.latency("feed", 0.99)),
            client_lag_p99_ms=ms(run.lag_p99),
        )
        assert attempts <= 1.2 * len(failing) + 300
        assert slow_errors == [], sorted({(r.status, r.error, r.detail) for r in slow_errors})
        assert [r for r in failing if r.status not in (200, 503)] == []
        assert after and sum(1 for r in after if r.ok((200,))) >= 0.99 * len(after)
    finally:
        assert cell.process.stop() == 0, cell.process.log_tail()


async def test_a_rolling_restart_of_feed_under_load(tmp_path: Path) -> None:
    cell = start_cell(tmp_path, "chaos-rolling", FEED_COPIES_OFF, replicas={"feed": 3})
    try:
        capacity, rate = await load_rate(cell)
        old = {i["id"]: i for i in await cell.instances("feed")}
        # Wall-clock times: the server stamps each registry change when it stores it, which
        # does not depend on how soon this loaded process sees the change.
        changes: list[tuple[float, str, str]] = []  # (stored at, instance id, status | DELETED)
        refused: dict[str, float] = {}  # instance id -> when its gRPC port first refused

        async def watch_registry() -> None:
            nc = await nats.connect(cell.nats_url())
            try:
                kv = await nc.jetstream().key_value("cellwork_registry")
                watcher = await kv.watch("feed.>")
                while True:
                    entry = await watcher.updates(timeout=None)
                    if entry is None:
                        continue
                    instance = entry.key.split(".", 1)[1]
                    status = (
                        InstanceInfo.from_json(entry.value).status.value
                        if entry.value
                        else "DELETED"
                    )
                    stored = entry.created.timestamp() if entry.created else time.time()
                    changes.append((stored, instance, status))
            finally:
                await nc.close()

        async def poll_port(instance: dict[str, Any]) -> None:
            while True:
                try:
                    _, writer = await asyncio.open_connection(
                        instance["host"], instance["grpc_port"]
                    )
                except OSError:
                    refused[instance["id"]] = time.time()
                    return
                writer.close()
                await asyncio.sleep(0.05)

        async def restart(driver: OpenLoopDriver) -> None:
            await asyncio.sleep(4)
            driver.mark("restart")
            await cli_ok(cell, "restart", "feed", "--rolling")
            driver.mark("done")

        async def reads(client: LoadClient, index: int) -> Answer:
            return await cell.read(client)

        watching = [asyncio.create_task(watch_registry())]
        watching += [asyncio.create_task(poll_port(i)) for i in old.values()]
        try:
            run = await drive(cell, rate, 50, restart, mix=reads)
            await eventually(lambda: len(refused) == len(old), "every old feed port closed", 30)
        finally:
            for task in watching:
                task.cancel()
            await asyncio.gather(*watching, return_exceptions=True)
        order = {
            instance: [status for _, who, status in changes if who == instance] for instance in old
        }
        deleted_at: dict[str, float] = {}  # the first deletion: the supervisor deletes again
        for at, who, status in changes:
            if status == "DELETED" and who in old:
                deleted_at.setdefault(who, at)
        early = [i for i in old if i not in deleted_at or deleted_at[i] > refused[i]]
        failed = run.failed("feed", (200,))
        new = await cell.instances("feed")
        record(
            "calls 5. cellwork restart feed --rolling under load (3 instances, feed copies off)",
            capacity_rps=capacity,
            rate_rps=rate,
            reads=len(run.of("feed")),
            failed_reads=len(failed),
            rollout_ms=ms(run.marks["done"] - run.marks["restart"]),
            deregistered_before_port_closed=f"{len(old) - len(early)}/{len(old)}",
            read_p99_ms=ms(run.latency("feed", 0.99)),
            client_lag_p99_ms=ms(run.lag_p99),
        )
        assert failed == [], sorted({(r.status, r.error, r.detail) for r in failed})
        for instance, statuses in order.items():
            assert "DRAINING" in statuses and statuses[-1] == "DELETED", (instance, statuses)
            assert statuses.index("DRAINING") < statuses.index("DELETED"), (instance, statuses)
        assert early == [], {i: (deleted_at.get(i), refused[i]) for i in early}
        assert len(new) == 3 and not {i["id"] for i in new} & set(old)
    finally:
        assert cell.process.stop() == 0, cell.process.log_tail()


async def endpoint_calls(cell: LearnfeedCell, endpoint: str) -> dict[str, float]:
    """Attempts each gateway has sent to the feed instance ``endpoint`` so far (a gateway
    whose balancer dropped the endpoint no longer shows it)."""
    gateways = await cell.metrics("gateway")
    return {
        gateway: sample_sum(
            [text], "cellwork_rpc_endpoint_calls_total", service="feed", endpoint=endpoint
        )
        for gateway, text in gateways.items()
    }


async def reads_only(cell: LearnfeedCell) -> Mix:
    async def reads(client: LoadClient, index: int) -> Answer:
        return await cell.read(client)

    return reads


PAUSE = 20.0


@pytest.mark.parametrize("hang_timeout", [PAUSE + 10.0, None], ids=["kept", "replaced"])
async def test_a_feed_instance_paused(tmp_path: Path, hang_timeout: float | None) -> None:
    supervisor = {"hang_timeout": hang_timeout} if hang_timeout else None
    name = "chaos-pause-kept" if hang_timeout else "chaos-pause-replaced"
    cell = start_cell(tmp_path, name, FEED_COPIES_OFF, replicas={"feed": 3}, supervisor=supervisor)
    try:
        capacity, rate = await load_rate(cell)
        counts: dict[str, float] = {}
        victim = "feed-1"
        paused_pid: list[int] = []

        async def pause(driver: OpenLoopDriver) -> None:
            await asyncio.sleep(5)
            paused_pid.extend(i["pid"] for i in await cell.instances("feed") if i["id"] == victim)
            before = await endpoint_calls(cell, victim)
            await cell.control("pause", service="feed", instance=victim, seconds=PAUSE)
            paused_at = driver.mark("paused")
            # The counters go when a gateway drops the endpoint (its record expires while
            # it is stopped): the highest value each showed is what reached it.
            highest = dict(before)
            while driver.elapsed() < paused_at + PAUSE - 1.0:
                for gateway, calls in (await endpoint_calls(cell, victim)).items():
                    highest[gateway] = max(highest.get(gateway, 0.0), calls)
                await asyncio.sleep(0.25)
            counts["reached"] = sum(highest[g] - before.get(g, 0.0) for g in highest)
            driver.mark("pause ends")

        run = await drive(cell, rate, PAUSE + 15, pause, mix=await reads_only(cell))
        reached = counts["reached"]
        failed = run.failed("feed", (200,))
        serving = await cell.instances("feed")
        replaced = not {i["pid"] for i in serving} & set(paused_pid)
        gateways = len(await cell.instances("gateway"))
        record(
            f"calls 2. one of 3 feed instances SIGSTOPped for {PAUSE:g} s "
            f"(hang timeout {'above the pause' if hang_timeout else 'default'}, feed copies off)",
            capacity_rps=capacity,
            rate_rps=rate,
            reads=len(run.of("feed")),
            failed_reads=len(failed),
            calls_reaching_it_while_stopped=reached,
            replaced=replaced,
            read_p99_ms=ms(run.latency("feed", 0.99)),
            client_lag_p99_ms=ms(run.lag_p99),
        )
        assert failed == [], sorted({(r.status, r.error, r.detail) for r in failed})
        if hang_timeout:
            # 5 failed answers eject it from each gateway's balancer; the slack is what
            # left between reading the counters and the SIGSTOP landing.
            assert reached <= 5 * gateways + 5
        else:
            await eventually(
                lambda: _replaced(cell, paused_pid), "the paused instance replaced", timeout=60
            )
    finally:
        assert cell.process.stop() == 0, cell.process.log_tail()


async def _replaced(cell: LearnfeedCell, pids: list[int]) -> bool:
    serving = await cell.instances("feed")
    return len(serving) == 3 and not {i["pid"] for i in serving} & set(pids)


async def test_a_feed_instance_answering_internal_to_every_call(tmp_path: Path) -> None:
    cell = start_cell(tmp_path, "chaos-internal", FEED_COPIES_OFF, replicas={"feed": 3})
    try:
        capacity, rate = await load_rate(cell)
        victim = "feed-2"
        counts: dict[str, float] = {}

        async def fail_one(driver: OpenLoopDriver) -> None:
            await asyncio.sleep(5)
            await cli_ok(cell, "chaos", "fail", "feed", "1.0", "--instance", victim)
            driver.mark("failing")
            await asyncio.sleep(20)  # within the first ejection's 30 s
            feeds = await cell.metrics("feed")
            counts["failed_answers"] = sample_sum(
                [feeds[victim]], "cellwork_faults_injected_total", kind="fail"
            )
            driver.mark("measured")

        run = await drive(cell, rate, 30, fail_one, mix=await reads_only(cell))
        gateways = (await cell.metrics("gateway")).values()
        ejections = sample_sum(gateways, "cellwork_balancer_ejections_total", service="feed")
        failed = run.failed("feed", (200,))
        record(
            "calls 7. one of 3 feed instances answering INTERNAL to every call (feed copies off)",
            capacity_rps=capacity,
            rate_rps=rate,
            reads=len(run.of("feed")),
            failed_reads=len(failed),
            internal_answers_it_gave=counts["failed_answers"],
            ejections=ejections,
            read_p99_ms=ms(run.latency("feed", 0.99)),
            client_lag_p99_ms=ms(run.lag_p99),
        )
        # Each caller (gateways, recommenders) ejects it after 5 failed answers in a row;
        # the gateways' 5 reads are answered from the user's last feed.
        callers = len(gateways) + len(await cell.instances("recommender"))
        assert counts["failed_answers"] <= 5 * callers
        assert ejections >= 1
        assert failed == [], sorted({(r.status, r.error, r.detail) for r in failed})
    finally:
        assert cell.process.stop() == 0, cell.process.log_tail()


OVERLOAD_CPU_MS = "30"  # of CPU per feed call: about 30 calls/s from one instance
OVERLOAD = 3.0  # times what feed can serve


async def feed_served(cell: LearnfeedCell) -> float:
    """GetFeed calls feed's instances have answered OK so far."""
    feeds = (await cell.metrics("feed")).values()
    return sample_sum(feeds, "cellwork_rpc_server_requests_total", method="Feed/GetFeed", code="OK")


# Row C6 of README's Resilience table, a requirement not met yet (README says why: a
# CPU-bound handler's queue is in gRPC's core, unseen by the limit and the loop-lag
# probe). Strict: once the overload is shed, this passes and the marker must go.
@pytest.mark.xfail(
    strict=True,
    reason="not met yet: feed's adaptive limit does not shed a CPU-bound overload "
    "(0 shed, goodput 30% of capacity, every excess call waits out its deadline)",
)
async def test_feed_offered_three_times_what_it_can_serve(tmp_path: Path) -> None:
    cell = start_cell(tmp_path, "chaos-overload", FEED_COPIES_OFF, replicas={"feed": 1})
    try:
        await cli_ok(cell, "chaos", "delay", "feed", OVERLOAD_CPU_MS, "--cpu")
        # Feed's capacity with that fault: a closed loop under its smallest limit, so
        # nothing is shed while it is measured.
        before, started = await feed_served(cell), time.monotonic()
        await measure_capacity(
            f"{cell.http}/v1/feed?limit=20",
            {"Authorization": f"Bearer {cell.first_token()}"},
            seconds=6,
            connections=8,
        )
        capacity = (await feed_served(cell) - before) / (time.monotonic() - started)
        rate = round(OVERLOAD * capacity, 1)
        assert rate <= CLIENT_CEILING, (
            f"feed serves {capacity:.0f}/s: more than this client can triple"
        )
        restarts = {i["id"]: i["restarts"] for i in await cell.instances("feed")}
        shed_before = await refusals(cell)
        served_before = await feed_served(cell)

        async def nothing(driver: OpenLoopDriver) -> None:
            await asyncio.sleep(0)

        overload = await drive(cell, rate, 20, nothing, mix=await reads_only(cell))
        goodput = (await feed_served(cell) - served_before) / 20
        shed, in_20_ms = (a - b for a, b in zip(await refusals(cell), shed_before, strict=True))
        calm = await drive(cell, round(capacity / 3, 1), 15, nothing, mix=await reads_only(cell))
        after = {i["id"]: i["restarts"] for i in await cell.instances("feed")}
        calm_failed = calm.failed("feed", (200,), after=5.0)
        record(
            f"calls 6. feed offered {OVERLOAD:g}x what it can serve "
            f"({OVERLOAD_CPU_MS} ms of CPU a call, one instance, feed copies off)",
            feed_capacity_rps=round(capacity, 1),
            rate_rps=rate,
            reads=len(overload.of("feed")),
            answered_200=sum(1 for r in overload.of("feed") if r.status == 200),
            answered_503=sum(1 for r in overload.of("feed") if r.status == 503),
            goodput_rps=round(goodput, 1),
            goodput_share=round(goodput / capacity, 2),
            shed_at_feed=shed,
            shed_within_20_ms=in_20_ms,
            restarts=sum(after.values()) - sum(restarts.values()),
            failed_5s_after_load_dropped=len(calm_failed),
            read_p99_ms=ms(overload.latency("feed", 0.99)),
            client_lag_p99_ms=ms(max(overload.lag_p99, calm.lag_p99)),
        )
        assert shed > 0  # it was overloaded, and said so
        assert in_20_ms >= 0.99 * shed
        assert goodput >= 0.8 * capacity
        assert after == restarts
        assert [r for r in overload.of("feed") if r.status not in (200, 503) or r.error] == []
        assert calm_failed == [], sorted({(r.status, r.error, r.detail) for r in calm_failed})
    finally:
        assert cell.process.stop() == 0, cell.process.log_tail()


async def refusals(cell: LearnfeedCell) -> tuple[float, float]:
    """(calls feed refused as overloaded, those refused within 20 ms of arriving)."""
    feeds = list((await cell.metrics("feed")).values())
    name = "cellwork_rpc_server_refusal_seconds"
    return (
        sample_sum(feeds, f"{name}_count", method="Feed/GetFeed"),
        sample_sum(feeds, f"{name}_bucket", method="Feed/GetFeed", le="0.02"),
    )
