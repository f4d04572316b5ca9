"""A malformed refresh event: dead-lettered at its first delivery with its error, the
consumer's lag back to 0, and `cellwork dlq replay` delivers it once (README,
Resilience row 5)."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cellwork.testing.ledger import stream_copies
from tests.chaos.faults import consumer_lag, eventually, publish
from tests.chaos.learnfeed_cell import LearnfeedCell, start_cell
from tests.chaos.measured import record

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

POISON_FAILURES = re.compile(
    r'^cellwork_events_failed_total\{[^}]*durable="recommender"[^}]*kind="poison"[^}]*\} (\S+)$',
    re.MULTILINE,
)


def dead_letters(cell: LearnfeedCell) -> list[dict[str, Any]]:
    done = cell.cli("dlq", "list", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    letters: list[dict[str, Any]] = json.loads(done.stdout)
    return letters


def poison_deliveries(cell: LearnfeedCell) -> int:
    """Deliveries the recommender instances failed as poison (their /metrics, summed)."""
    total = 0.0
    for row in cell.process.instances():
        if row["service"] == "recommender" and row["metrics_port"]:
            url = f"http://127.0.0.1:{row['metrics_port']}/metrics"
            with urllib.request.urlopen(url, timeout=5) as reply:
                text = reply.read().decode()
            total += sum(float(value) for value in POISON_FAILURES.findall(text))
    return int(total)


async def test_a_malformed_refresh_is_dead_lettered_at_once_and_replayed_once(
    tmp_path: Path,
) -> None:
    cell = start_cell(tmp_path, "chaos-poison")
    try:
        url = cell.nats_url()
        await publish(url, "feed.refresh.requested", [(b"\xff\x00 not a protobuf", "poison-1")])

        def dead_lettered() -> list[dict[str, Any]]:
            return [d for d in dead_letters(cell) if d["subject"] == "feed.refresh.requested"]

        await eventually(dead_lettered, "the malformed event in the dead-letter stream")
        [letter] = dead_lettered()

        async def caught_up() -> bool:
            return await consumer_lag(url, "FEED", "recommender") == 0

        await eventually(caught_up, "the refresh consumer's lag back to 0")
        await eventually(lambda: poison_deliveries(cell) == 1, "the poison delivery counted")

        replayed = await asyncio.to_thread(cell.cli, "dlq", "replay", str(letter["seq"]))
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        await eventually(lambda: poison_deliveries(cell) >= 2, "the replay delivered")
        await eventually(caught_up, "the refresh consumer's lag back to 0 after the replay")
        again = dead_lettered()
        copies = await stream_copies(url, "FEED", "feed.refresh.requested")
        replays = {k: v for k, v in copies.items() if k.startswith("replay:")}
        record(
            "5. a malformed refresh event",
            reason=letter["reason"],
            deliveries_before_dead_letter=letter["deliveries"],
            error=letter["error"][:60],
            deliveries_of_the_replay=poison_deliveries(cell) - 1,
            replay_copies_in_stream=sum(replays.values()),
        )
        assert letter["reason"] == "poison" and letter["deliveries"] == 1
        assert letter["durable"] == "recommender" and letter["error"]
        assert poison_deliveries(cell) == 2  # the replay was delivered once, no more
        assert sum(replays.values()) == 1
        assert [d["seq"] for d in again] != [letter["seq"]] and len(again) == 1
    finally:
        assert cell.process.stop() == 0, cell.process.log_tail()
