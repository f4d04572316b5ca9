"""Aggregation: parts that fail or miss their deadline are named, not fatal."""

import asyncio
import time

from cellwork.gateway import gather_parts


async def test_parts_that_fail_or_miss_their_deadline_are_named_not_fatal() -> None:
    async def fast() -> int:
        return 1

    async def slow() -> int:
        await asyncio.sleep(5)
        return 2

    async def broken() -> int:
        raise RuntimeError("down")

    started = time.monotonic()
    results, partial = await gather_parts({"a": fast, "b": slow, "c": broken}, deadline=0.1)
    assert time.monotonic() - started < 1.0
    assert results == {"a": 1}
    assert partial == ["b", "c"]
