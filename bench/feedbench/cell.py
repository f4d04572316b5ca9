"""The learnfeed cell under test: ``cellwork up`` of a temp copy of its cell file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedbench.local import HOST, REPO, free_port
from feedbench.procs import descendants, process_label, same_process_alive, taskset_prefix

CELL_FILE = REPO / "src" / "learnfeed" / "cell.yaml"
REPLICAS = {"gateway": 2, "feed": 2, "catalog": 2}


@dataclass
class Cell:
    """``cellwork up`` of a temp copy of learnfeed's cell file."""

    workdir: Path
    cpus: str | None
    gateway_feed_cache: bool = True
    gateway_port: int = field(default_factory=free_port)
    push_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    known: dict[int, int] = field(default_factory=dict)  # pid -> start time, ever seen
    expected: int = 0
    warnings: list[str] = field(default_factory=list)  # warning-level lines, by log_problems

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def log_path(self) -> Path:
        return self.workdir / "cellwork-up.log"

    @property
    def gateway_url(self) -> str:
        return f"http://{HOST}:{self.gateway_port}"

    @property
    def push_url(self) -> str:
        return f"ws://{HOST}:{self.push_port}/v1/stream"

    def write_cell_file(self) -> Path:
        import yaml

        raw = yaml.safe_load(CELL_FILE.read_text())
        raw["name"] = "learnfeed-bench"
        raw["state_dir"] = str(self.state_dir)
        env = {str(k): str(v) for k, v in (raw.get("env") or {}).items()}
        env.update(
            CELLWORK_GATEWAY_PORT=str(self.gateway_port),
            CELLWORK_PUSH_PORT=str(self.push_port),
            CELLWORK_HOST=HOST,
            CELLWORK_DEMO="1",
            CELLWORK_RATE_LIMIT_RPS="1000000",
            CELLWORK_RATE_LIMIT_BURST="1000000",
            CELLWORK_AUTH_RATE_LIMIT_RPS="1000000",
            CELLWORK_AUTH_RATE_LIMIT_BURST="1000000",
            CELLWORK_GATEWAY_FEED_CACHE="1" if self.gateway_feed_cache else "0",
        )
        raw["env"] = env
        for name, replicas in REPLICAS.items():
            raw["services"][name]["replicas"] = replicas
        self.expected = sum(int(s.get("replicas", 1)) for s in raw["services"].values())
        path = self.workdir / "cell.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    def describe(self) -> str:
        import yaml

        raw = yaml.safe_load((self.workdir / "cell.yaml").read_text())
        return ", ".join(f"{n} x{s.get('replicas', 1)}" for n, s in raw["services"].items())

    def start(self) -> None:
        cell_file = self.write_cell_file()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cellwork = Path(sys.executable).parent / "cellwork"
        command = [*taskset_prefix(self.cpus), str(cellwork), "up", "-f", str(cell_file)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the bench only; it stops the cell
            )
        self.snapshot()

    def snapshot(self) -> dict[int, int]:
        """Remember every process of the cell now running (to check they all exit)."""
        if self.process is None:
            return {}
        now = descendants(self.process.pid)
        self.known.update(now)
        return now

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"cellwork up exited with code {self.process.returncode}:\n{tail}")

    async def status(self) -> list[dict[str, Any]] | None:
        cellwork = Path(sys.executable).parent / "cellwork"
        proc = await asyncio.create_subprocess_exec(
            str(cellwork),
            "status",
            "--json",
            "--state-dir",
            str(self.state_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            return None
        try:
            return list(json.loads(out)["instances"])
        except (ValueError, KeyError, TypeError):
            return None

    async def wait_ready(self, timeout: float) -> list[dict[str, Any]]:
        import httpx

        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] | None = None
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                self.check_alive()
                last = await self.status()
                if (
                    last is not None
                    and len(last) == self.expected
                    and all(i["status"] == "SERVING" for i in last)
                ):
                    codes = []
                    for url in (
                        f"{self.gateway_url}/readyz",
                        f"http://{HOST}:{self.push_port}/readyz",
                    ):
                        try:
                            codes.append((await http.get(url)).status_code)
                        except httpx.HTTPError:
                            codes.append(0)
                    if codes == [200, 200]:
                        self.snapshot()
                        return last
                await asyncio.sleep(0.5)
        states = [(i["id"], i["status"]) for i in last or []]
        raise RuntimeError(f"cell not ready after {timeout:g} s: {states}")

    def nats_url(self) -> str:
        return str(json.loads((self.state_dir / "cell.json").read_text())["nats_url"])

    def stop(self, drain: float = 45.0) -> list[str]:
        """SIGINT (drain), a second SIGINT, then SIGKILL; returns processes left behind."""
        if self.process is None:
            return []
        with contextlib.suppress(Exception):
            self.snapshot()
        process = self.process
        for signum, wait in ((signal.SIGINT, drain), (signal.SIGINT, 5.0), (signal.SIGKILL, 5.0)):
            if process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
            try:
                process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                print(f"cellwork up still running {wait:g} s after signal {signum}", flush=True)
        leftovers = []
        deadline = time.monotonic() + 5.0
        for pid, start in self.known.items():
            while same_process_alive(pid, start) and time.monotonic() < deadline:
                time.sleep(0.1)
            if same_process_alive(pid, start):
                leftovers.append(f"{process_label(pid)} (pid {pid})")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.process = None
        return leftovers

    def log_problems(self) -> list[str]:
        """Error-level lines and tracebacks in the cell's logs (one line each)."""
        problems = []
        paths = [self.log_path, *sorted((self.state_dir / "logs").glob("*.log"))]
        pattern = re.compile(r'"level":\s*"(error|critical)"|\bERROR\b|Traceback|\berror\s*\]')
        for path in paths:
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                if pattern.search(line):
                    problems.append(f"{path.name}: {line.strip()[:240]}")
                elif '"level": "warning"' in line:
                    self.warnings.append(f"{path.name}: {line.strip()[:240]}")
        return problems
