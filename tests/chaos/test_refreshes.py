"""Refreshes under faults: a feed instance dies between its commit and its announcement;
identity, catalog and feed go away for 10 s each while refreshes flow (README,
Resilience rows 3-4)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from learnfeed.v1 import events_pb2
from tests.chaos.faults import consumer_lag, eventually, publish, stream_messages
from tests.chaos.learnfeed_cell import applied_refreshes, feed_versions, start_cell
from tests.chaos.measured import record

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

FAULT_ENV = {
    "CELLWORK_TEST_FAULTS": "1",
    "CELLWORK_TEST_EXIT_AT": "outbox.after_commit",
}


async def test_a_feed_instance_killed_between_its_commit_and_its_announcement(
    tmp_path: Path,
) -> None:
    arm = tmp_path / "arm-feed-fault"
    cell = start_cell(
        tmp_path / "cell",
        "chaos-outbox",
        {**FAULT_ENV, "CELLWORK_TEST_EXIT_ARM_FILE": str(arm)},
    )
    try:
        user = min(cell.tokens)
        url = cell.nats_url()
        restarts_before = sum(r["restarts"] for r in cell.process.instances())
        arm.touch()  # the next commit with announcements in any feed instance is its last
        async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
            first = await client.get("/v1/feed?limit=5", headers=cell.headers(user))
        assert first.status_code == 200 and first.json()["version"] == 0
        started = time.monotonic()
        await eventually(lambda: not arm.exists(), "the armed fault to fire")
        await eventually(
            lambda: feed_versions(cell.state_dir).get(user, (0, 0))[0] >= 1, "a stored version"
        )
        await eventually(
            lambda: sum(r["restarts"] for r in cell.process.instances()) > restarts_before,
            "the killed feed instance restarted",
        )

        async def refreshes_settled() -> bool:
            return await consumer_lag(url, "FEED", "recommender") == 0

        await eventually(refreshes_settled, "the refresh consumer to catch up")
        ready = await _ready_copies(url, user)
        version, applied = feed_versions(cell.state_dir)[user]
        restarts = sum(r["restarts"] for r in cell.process.instances()) - restarts_before
        record(
            "3. a feed instance killed between storing a version and announcing it",
            feed_instances_killed=restarts,
            feed_ready_copies=dict(ready),
            versions_stored=version,
            refresh_ids_applied=applied,
            ready_after_ms=round((time.monotonic() - started) * 1000),
        )
        assert restarts == 1
        assert ready == {f"ready.{user}.{version}": 1} or (
            # a later read may have asked for (and announced) a newer version: each once
            set(ready.values()) == {1} and len(ready) == version
        )
        assert version == applied  # no refresh stored twice
    finally:
        assert cell.process.stop() == 0, cell.process.log_tail()


async def _ready_copies(url: str, user: str) -> dict[str, int]:
    from cellwork.testing.ledger import stream_copies

    return dict(await stream_copies(url, "FEED", f"feed.ready.{user}"))


async def test_identity_catalog_and_feed_each_gone_for_10_s_while_refreshes_flow(
    tmp_path: Path,
) -> None:
    cell = start_cell(tmp_path, "chaos-deps")
    try:
        url = cell.nats_url()
        users = sorted(cell.tokens)[:20]
        sent: list[str] = []
        stop = asyncio.Event()

        async def refreshes() -> None:
            n = 0
            while not stop.is_set():
                user = users[n % len(users)]
                event = events_pb2.FeedRefreshRequested(
                    user_id=user, reason="chaos", requested_at=time.time()
                )
                msg_id = f"chaos.{user}.{n}"
                await publish(url, "feed.refresh.requested", [(event.SerializeToString(), msg_id)])
                sent.append(msg_id)
                n += 1
                await asyncio.sleep(0.2)

        flow = asyncio.create_task(refreshes())
        replicas = {"identity": 1, "catalog": 2, "feed": 2}
        try:
            for service, count in replicas.items():
                await asyncio.sleep(3)
                down = await asyncio.to_thread(cell.cli, "scale", service, "0")
                assert down.returncode == 0, down.stdout + down.stderr
                await asyncio.sleep(10)  # the outage the scenario is about
                up = await asyncio.to_thread(cell.cli, "scale", service, str(count))
                assert up.returncode == 0, up.stdout + up.stderr
            await asyncio.sleep(3)
        finally:
            stop.set()
            await flow
        started = time.monotonic()
        await eventually(
            lambda: set(sent) <= set(applied_refreshes(cell.state_dir)),
            "every refresh applied",
            timeout=180,
        )
        caught_up = time.monotonic() - started
        applied = applied_refreshes(cell.state_dir)
        versions = feed_versions(cell.state_dir)
        dead = await stream_messages(url, "DEADLETTER")
        record(
            "4. identity, catalog and feed each gone for 10 s while refreshes flow",
            refreshes_sent=len(sent),
            refreshes_applied=sum(1 for s in sent if s in applied),
            dead_lettered=dead,
            users_with_a_version_per_refresh=sum(
                1 for u in users if versions.get(u, (0, -1))[0] == versions.get(u, (0, -1))[1]
            ),
            caught_up_after_ms=round(caught_up * 1000),
        )
        assert dead == 0
        # one stored version per refresh event id: each user's version count is the
        # number of refresh ids applied to it (a refresh stored twice would be one more)
        assert {u: versions[u][0] for u in users} == {u: versions[u][1] for u in users}
    finally:
        assert cell.process.stop() == 0, cell.process.log_tail()
