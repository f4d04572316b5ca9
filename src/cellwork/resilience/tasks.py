"""Stopping a background task for sure.

``task.cancel()`` then ``await task`` under ``suppress(CancelledError)`` looks right and
can wait forever, in two ways:

* On Python 3.11 a single cancel may not end the task. ``asyncio.wait_for``, under every
  nats-py request, returns the result instead of raising when the cancel arrives in the
  loop iteration in which the awaited reply landed (CPython gh-86296, fixed in 3.12); a
  loop around the request (a heartbeat, a probe) then carries on, and whoever awaits
  it waits forever.
* The ``suppress`` cannot tell the task's cancellation from the caller's own: a caller
  cancelled while it waits (a ``wait_for`` bounding a shutdown) swallows that too and
  keeps waiting.

``stop_task`` cancels again until the task has ended and raises only the caller's own
cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any

# How long a cancelled task may take to end before it is cancelled again: well above
# what the cleanup of a task here takes, well below what a caller notices.
RECANCEL_EVERY = 0.1


async def stop_task(
    task: asyncio.Future[Any], *, recancel_every: float = RECANCEL_EVERY
) -> BaseException | None:
    """Cancel ``task`` and wait until it has ended, cancelling it again every
    ``recancel_every`` seconds while it runs.

    Returns the exception the task ended with (None when it returned or was
    cancelled), so that the caller decides whether to log it; raises nothing of the
    task's, only ``CancelledError`` when the caller itself is cancelled meanwhile.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=recancel_every)
    if task.cancelled():
        return None
    return task.exception()
