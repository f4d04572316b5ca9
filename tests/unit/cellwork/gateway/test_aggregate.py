"""Aggregation: parts that fail or miss their deadline are named, not fatal."""

import asyncio

from cellwork.gateway import gather_parts


async def test_parts_that_fail_or_miss_their_deadline_are_named_not_fatal() -> None:
    slow_cancelled = asyncio.Event()

    async def fast() -> int:
        return 1

    async def slow() -> int:
        try:
            await asyncio.Event().wait()  # never answers: only the deadline ends it
        except asyncio.CancelledError:
            slow_cancelled.set()
            raise
        return 2

    async def broken() -> int:
        raise RuntimeError("down")

    # The slow part never finishes, so an answer at all means the deadline cut it off;
    # the outer bound only keeps a broken deadline from hanging the test.
    results, partial = await asyncio.wait_for(
        gather_parts({"a": fast, "b": slow, "c": broken}, deadline=0.1), 30
    )
    assert results == {"a": 1}
    assert partial == ["b", "c"]
    assert slow_cancelled.is_set()  # left out and cancelled, not left running
