"""What a route serves closed-loop, measured with ``wrk`` (a compiled client), so a fault
test can drive its open-loop load at a fraction of what the cell did in the same run."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Mapping

_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_REQUESTS = re.compile(r"(\d+) requests in")
_FAILED = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
MAX_REFUSED = 0.1
"""Share of answers a saturated cell may refuse (a server sheds what exceeds its limits,
503 at once) for the rate of the others to still count as its capacity."""


class CapacityUnknown(RuntimeError):
    """wrk is missing, failed, or printed no rate."""


async def measure_capacity(
    url: str,
    headers: Mapping[str, str] | None = None,
    *,
    seconds: float = 4.0,
    connections: int = 16,
) -> float:
    """Requests a second ``url`` answered with success with ``connections`` kept busy for
    ``seconds``; raises CapacityUnknown when wrk fails or more than ``MAX_REFUSED`` of the
    answers were not successes."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise CapacityUnknown("wrk is not installed (apt-get install wrk; tests/tools.sh does)")
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    process = await asyncio.create_subprocess_exec(
        *command,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    found = _RATE.search(text)
    if process.returncode != 0 or found is None:
        raise CapacityUnknown(f"wrk gave no rate (exit {process.returncode}):\n{text}")
    # Saturated on purpose, a cell sheds some of it: what it served is the capacity, as
    # long as refusals stay a small share (more means something else is wrong).
    total = _REQUESTS.search(text)
    failed = _FAILED.search(text)
    refused = int(failed.group(1)) if failed else 0
    requests = int(total.group(1)) if total else 0
    if refused and (requests == 0 or refused > MAX_REFUSED * requests):
        raise CapacityUnknown(f"wrk saw too many failed answers for a capacity:\n{text}")
    return float(found.group(1)) * (1 - refused / requests if requests else 1.0)
