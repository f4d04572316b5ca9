"""What a route serves closed-loop, measured with ``wrk`` (a compiled client), so a fault
test can drive its open-loop load at a fraction of what the cell did in the same run."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Mapping

_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")


class CapacityUnknown(RuntimeError):
    """wrk is missing, failed, or printed no rate."""


async def measure_capacity(
    url: str,
    headers: Mapping[str, str] | None = None,
    *,
    seconds: float = 4.0,
    connections: int = 16,
) -> float:
    """Requests a second ``url`` answered with ``connections`` kept busy for ``seconds``."""
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
    if "Non-2xx" in text:
        raise CapacityUnknown(f"wrk saw failed answers, the rate is not a capacity:\n{text}")
    return float(found.group(1))
