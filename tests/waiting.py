"""Waiting in tests on what should happen, never for a guessed time.

A test that sleeps for "long enough" is slow on a fast machine and wrong on a busy
one; ``wait_until`` returns as soon as the condition holds and fails, naming what it
waited for, only after a bound far above what it should take. A small loop of our
own rather than a retry library: tests need no back-off, jitter or retry policy,
only "poll until true, or fail after the bound".
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

# Far above what any condition here needs on an idle machine (well under a second),
# so a loaded 2-core machine slows a test down without failing it.
BOUND = 30.0
# Short enough to add little to a test, long enough not to starve what it waits for.
POLL = 0.02


async def wait_until(
    condition: Callable[[], object | Awaitable[object]],
    what: str,
    *,
    timeout: float = BOUND,
    every: float = POLL,
) -> None:
    """Poll ``condition`` (plain or async) every ``every`` s until what it returns is true.

    Raises AssertionError naming ``what`` when it is still false after ``timeout`` s.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"still waiting after {timeout} s for {what}")
        await asyncio.sleep(every)
