"""The retention job's arithmetic, with the clock passed in."""

from __future__ import annotations

from learnfeed.retention import Prune


async def test_a_pass_deletes_what_is_older_than_the_retention() -> None:
    asked: list[float] = []

    async def prune(before: float) -> int:
        asked.append(before)
        return 3

    job = Prune("things", prune, keep=100.0, interval=60.0, clock=lambda: 1000.0)
    assert await job.run_once() == 3
    assert asked == [900.0]
