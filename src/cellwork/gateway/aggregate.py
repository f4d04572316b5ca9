"""Concurrent aggregation: run named parts at once, each with its own deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cellwork.observability.logging import get_logger

_log = get_logger("cellwork.gateway.aggregate")


async def gather_parts(
    parts: Mapping[str, Callable[[], Awaitable[Any]]], deadline: float
) -> tuple[dict[str, Any], list[str]]:
    """Run every part concurrently; returns (results by name, names left out).

    A part that raises or is not done within ``deadline`` seconds is cancelled
    and named in the second list instead of failing the whole answer.
    """
    tasks = {name: asyncio.ensure_future(make()) for name, make in parts.items()}
    done, pending = await asyncio.wait(tasks.values(), timeout=deadline)
    for task in pending:
        task.cancel()
    results: dict[str, Any] = {}
    partial: list[str] = []
    for name, task in tasks.items():
        if task in done and task.exception() is None:
            results[name] = task.result()
            continue
        partial.append(name)
        reason = "deadline" if task in pending else repr(task.exception())
        _log.warning("gateway.part_left_out", part=name, reason=reason)
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    return results, partial
