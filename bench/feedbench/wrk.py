"""wrk: installing it, one run against a URL, and its BENCH line (bench/feed_wrk.lua)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from feedbench.local import FEED_PATH
from feedbench.procs import CpuWatch, taskset_prefix

LUA_SCRIPT = Path(__file__).resolve().parents[1] / "feed_wrk.lua"


def ensure_wrk() -> str:
    """The path of wrk, installed with apt-get first if missing."""
    found = shutil.which("wrk")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-q", "wrk"]
    print("wrk not found: " + " ".join(install), flush=True)
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, check=False)
        subprocess.run(install, env=env, check=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("could not install wrk")
    return found


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    text: str
    cpu: dict[str, float] = field(default_factory=dict)  # label -> % of one core

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


async def run_wrk(
    wrk: str,
    url: str,
    tokens_file: Path,
    args: argparse.Namespace,
    duration: float,
    watch: Sequence[int] = (),
    delay_ms: float = 0.0,
) -> WrkResult:
    """One wrk run; with ``watch``, the CPU each of those pids (and wrk) used meanwhile.

    ``delay_ms`` > 0 paces every connection (see bench/feed_wrk.lua): a fixed-rate run.
    """
    command = [
        *taskset_prefix(args.wrk_cpus),
        wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration:g}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(tokens_file),
        FEED_PATH,
        *([f"{delay_ms:.2f}"] if delay_ms > 0 else []),
    ]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        cpu_watch = CpuWatch([*watch, proc.pid], labels={proc.pid: "wrk"}).start()
        wait = asyncio.create_task(proc.communicate())
        await asyncio.sleep(max(0.0, duration - 0.5))
        cpu = cpu_watch.stop()
        out, _ = await wait
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    match = re.search(r"^BENCH (\{.*\})$", text, re.M)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{text}")
    data = json.loads(match.group(1))
    return WrkResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000.0,
        p99_ms=data["p99_us"] / 1000.0,
        non_2xx=int(data["status"]),
        socket_errors=sum(int(data[k]) for k in ("connect", "read", "write", "timeout")),
        text="\n".join(line for line in text.splitlines() if not line.startswith("BENCH ")),
        cpu=cpu,
    )
