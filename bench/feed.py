"""Feed benchmark: learnfeed's hot read and its push path against a bare-Starlette ceiling.

One run, from the repository root:

    .venv/bin/python bench/feed.py [--users 200 --duration 15 --connections 64]

What it does:

1. installs ``wrk`` with apt-get if it is missing (``hey`` cannot rotate headers,
   so it is not used: the load must spread over many users' tokens);
2. starts the learnfeed cell (``cellwork up -f <temp cell file>``): the services of
   ``src/learnfeed/cell.yaml`` with gateway, feed and catalog at 2 replicas, the demo
   catalog, free ports, a temp state dir and a per-user rate limit too high to
   throttle the bench; waits until ``cellwork status --json`` shows every instance
   SERVING and the gateway's and push's ``/readyz`` answer 200;
3. signs up ``--users`` users (``POST /v1/auth/signup``), reads each one's feed once
   and waits until every user has a computed (non-cold) feed version;
4. drives ``GET /v1/feed?limit=20`` through the gateway with wrk
   (``-t1 -c<connections> --latency``, ``bench/feed_wrk.lua`` rotating the bearer
   token over every user), wrk pinned to the first CPU with ``taskset`` and the cell
   not pinned (``--cell-cpus`` pins it); a short unrecorded warm-up run first. Each
   read also asks for a refresh (coalesced per user per refresh window), so the
   recommender works in the background, as it does in production. The CPU each
   process of the cell used in the recorded window is printed. Then a fixed-rate
   run at ``--rate`` (1,500 req/s): every connection waits a random delay before
   each request (bench/feed_wrk.lua), calibrated by a 4 s probe; the target is
   judged on this run, since a closed loop at saturation only measures its queue;
5. refresh-to-socket: opens a WebSocket to push for ``--push-users`` users, then
   publishes ``feed.refresh.requested`` (unique ``Nats-Msg-Id`` each) to the cell's
   JetStream at ``--push-rate`` events/s for ``--push-duration`` s, round-robin over
   those users, and times each publish to the ``feed.ready`` frame on that user's
   socket (frames matched to sends first in, first out per user);
6. stops the cell with SIGINT (it drains) and checks that none of its processes is
   left; scans the cell's logs for errors and tracebacks;
7. the ceiling: a bare Starlette app on uvicorn (uvloop, httptools, one worker,
   logs off) answering a real ``/v1/feed`` body as pre-rendered bytes, pinned to the
   second CPU, with the same wrk settings from the first CPU.

The table shows each row against its target; the last line is
``feed/ceiling req/s ratio: X.XX``. Everything listens on 127.0.0.1 only; the
processes it starts are stopped on exit, on error, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
CELL_FILE = REPO / "src" / "learnfeed" / "cell.yaml"
LUA_SCRIPT = Path(__file__).resolve().with_name("feed_wrk.lua")
FEED_PATH = "/v1/feed?limit=20"
REPLICAS = {"gateway": 2, "feed": 2, "catalog": 2}
PASSWORD = "bench-password-0123"

TARGET_FEED_RPS = 1500.0
TARGET_FEED_P99_MS = 50.0
TARGET_PUSH_P99_MS = 250.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank; NaN if empty."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --- processes ------------------------------------------------------------------


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, start time, user+system CPU ticks) of ``pid``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    # fields[0] is the state (stat field 3): ppid is field 4, utime 14, stime 15, start 22.
    return int(fields[1]), int(fields[19]), int(fields[11]) + int(fields[12])


def descendants(root: int) -> dict[int, int]:
    """``root`` and every process below it: pid -> start time."""
    parents: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None:
                parents[int(entry)] = (stat[0], stat[1])
    found: dict[int, int] = {}
    if root in parents:
        found[root] = parents[root][1]
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start) in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                frontier.append(pid)
    return found


def same_process_alive(pid: int, start: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[1] == start and not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return raw[raw.rfind(")") + 2 :].startswith("Z")


def process_label(pid: int) -> str:
    """A short name: the service of a ``cellwork serve`` instance, nats-server, ..."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    if not words:
        return "?"
    if "serve" in words and words.index("serve") + 1 < len(words):
        return words[words.index("serve") + 1].rsplit(".", 1)[-1]
    if "--serve-ceiling" in words:
        return "ceiling server"
    if any(w.endswith("nats-server") for w in words):
        return "nats-server"
    if "up" in words:
        return "supervisor"
    return Path(words[0]).name


def busy_ticks() -> tuple[int, int]:
    """(busy, of which irq + softirq) CPU ticks of all CPUs since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice (guest is in user)
    return sum(fields[:8]) - fields[3] - fields[4], fields[5] + fields[6]


def cpu_line(cpu: dict[str, float]) -> str:
    """'a 90%, b 10%, ...; machine busy X% of Y%' from label -> % of one core."""
    ordered = sorted(cpu.items(), key=lambda kv: -kv[1])
    return (
        ", ".join(f"{k} {v:.0f}%" for k, v in ordered if v >= 0.5)
        + f"; machine busy {sum(cpu.values()):.0f}% of {(os.cpu_count() or 1) * 100}%"
    )


@dataclass
class CpuWatch:
    """CPU used by some processes, the kernel's irqs and the rest, between start() and stop()."""

    pids: Sequence[int]
    labels: dict[int, str] = field(default_factory=dict)
    before: dict[int, int] = field(default_factory=dict)
    busy0: tuple[int, int] = (0, 0)
    t0: float = 0.0

    def start(self) -> CpuWatch:
        self.before, self.busy0, self.t0 = cpu_ticks(self.pids), busy_ticks(), time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        """label -> % of one core, plus the kernel's irq time and other processes' time."""
        after, busy1, t1 = cpu_ticks(self.pids), busy_ticks(), time.monotonic()
        seconds = max(t1 - self.t0, 1e-6)
        cpu: dict[str, float] = {}
        for pid, ticks in after.items():
            if pid in self.before:
                label = self.labels.get(pid) or process_label(pid)
                used = (ticks - self.before[pid]) / CLK_TCK / seconds * 100.0
                cpu[label] = cpu.get(label, 0.0) + used
        busy = (busy1[0] - self.busy0[0]) / CLK_TCK / seconds * 100.0
        irq = (busy1[1] - self.busy0[1]) / CLK_TCK / seconds * 100.0
        cpu["(kernel irq/softirq)"] = irq
        cpu["(other processes)"] = max(0.0, busy - sum(cpu.values()))
        return cpu


def cpu_ticks(pids: Sequence[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        stat = proc_stat(pid)
        if stat is not None:
            out[pid] = stat[2]
    return out


def taskset_prefix(cpus: str | None) -> list[str]:
    if cpus is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", cpus]


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


class Terminated(BaseException):
    """SIGTERM arrived."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


# --- the cell --------------------------------------------------------------------


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


# --- wrk ---------------------------------------------------------------------------


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


# --- users ---------------------------------------------------------------------------


@dataclass
class User:
    user_id: str
    token: str
    version: int = 0


async def sign_up_users(base_url: str, count: int, concurrency: int = 8) -> tuple[list[User], int]:
    """Sign up ``count`` users; returns them and how many 503/504 answers were retried."""
    import httpx

    run = secrets.token_hex(4)
    sem = asyncio.Semaphore(concurrency)
    retried = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as http:

        async def one(i: int) -> User:
            nonlocal retried
            body = {"email": f"bench-{run}-{i}@example.com", "password": PASSWORD}
            body["name"] = f"Bench User {i}"
            for attempt in range(4):
                async with sem:
                    reply = await http.post("/v1/auth/signup", json=body)
                if reply.status_code in (503, 504) and attempt < 3:
                    retried += 1  # the same email again: 409 means the first try landed
                    await asyncio.sleep(0.5)
                    continue
                if reply.status_code == 409 and attempt > 0:
                    login = {"email": body["email"], "password": PASSWORD}
                    reply = await http.post("/v1/auth/login", json=login)
                break
            if reply.status_code not in (200, 201):
                raise RuntimeError(f"signup {i}: {reply.status_code} {reply.text[:300]}")
            data = reply.json()
            return User(data["user_id"], data["access_token"])

        users = list(await asyncio.gather(*(one(i) for i in range(count))))
    return users, retried


async def read_feeds(base_url: str, users: Sequence[User], concurrency: int = 16) -> bytes:
    """GET each user's feed once, noting its version; returns the last body read."""
    import httpx

    sem = asyncio.Semaphore(concurrency)
    last = b""
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as http:

        async def one(user: User) -> None:
            nonlocal last
            async with sem:
                reply = await http.get(FEED_PATH, headers={"Authorization": f"Bearer {user.token}"})
            if reply.status_code != 200:
                raise RuntimeError(f"GET {FEED_PATH}: {reply.status_code} {reply.text[:300]}")
            user.version = int(reply.json()["version"])
            last = reply.content

        await asyncio.gather(*(one(u) for u in users))
    return last


async def settle(base_url: str, users: Sequence[User], timeout: float) -> tuple[int, bytes]:
    """Re-read cold feeds until every user has a computed version; returns (cold left, body)."""
    body = await read_feeds(base_url, users)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cold = [u for u in users if u.version == 0]
        if not cold:
            break
        await asyncio.sleep(1.0)
        body = await read_feeds(base_url, cold) or body
    cold_left = sum(1 for u in users if u.version == 0)
    if cold_left < len(users):  # a computed feed's body for the ceiling
        body = await read_feeds(base_url, [next(u for u in users if u.version > 0)])
    return cold_left, body


# --- refresh -> socket -----------------------------------------------------------------


@dataclass
class PushResult:
    published: int
    delivered: int
    latencies: list[float]  # seconds, sorted
    by_send: list[tuple[float, float]]  # (seconds after the first publish, latency)
    rate: float
    publish_errors: int
    unmatched: int
    sockets: int

    def q_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000.0

    def slices(self, width: float) -> str:
        """p50/p99 of the latencies of the events sent in each ``width``-second slice."""
        groups: dict[int, list[float]] = {}
        for sent, latency in self.by_send:
            groups.setdefault(int(sent // width), []).append(latency)
        parts = []
        for index in sorted(groups):
            values = sorted(groups[index])
            p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
            parts.append(f"{p50:.0f}/{p99:.0f}")
        return " ".join(parts)


async def refresh_to_socket(
    cell: Cell, users: Sequence[User], args: argparse.Namespace
) -> PushResult:
    import nats
    import orjson
    from websockets.asyncio.client import connect

    from learnfeed import subjects
    from learnfeed.v1 import events_pb2

    targets = list(users[: args.push_users])
    pending: dict[str, deque[float]] = {u.user_id: deque() for u in targets}
    latencies: list[float] = []
    by_send: list[tuple[float, float]] = []
    clock = {"start": 0.0}
    counters = {"unmatched": 0, "total": -1}  # total: events published, once all are
    drained = asyncio.Event()
    perf = time.perf_counter
    sockets: list[Any] = []
    readers: list[asyncio.Task[None]] = []
    sem = asyncio.Semaphore(32)

    async def reader(user_id: str, ws: Any) -> None:
        queue = pending[user_id]
        with contextlib.suppress(Exception):
            async for raw in ws:
                now = perf()
                frame = orjson.loads(raw)
                if frame.get("type") != "feed.ready":
                    continue
                if queue:
                    sent = queue.popleft()
                    latencies.append(now - sent)
                    by_send.append((sent - clock["start"], now - sent))
                    if len(latencies) == counters["total"]:
                        drained.set()
                else:
                    counters["unmatched"] += 1

    async def open_socket(user: User) -> None:
        async with sem:
            ws = await connect(
                f"{cell.push_url}?access_token={user.token}", open_timeout=10, max_size=2**20
            )
            sockets.append(ws)
            await ws.send('{"type":"ping"}')  # answered after the hub has joined the user
            async with asyncio.timeout(10):
                while orjson.loads(await ws.recv()).get("type") != "pong":
                    pass
        readers.append(asyncio.create_task(reader(user.user_id, ws)))

    nc = await nats.connect(cell.nats_url(), name="bench-feed", connect_timeout=5)
    try:
        await asyncio.gather(*(open_socket(u) for u in targets))
        js = nc.jetstream()
        await asyncio.sleep(1.0)  # frames of refreshes asked for by earlier reads land first
        counters["unmatched"] = 0
        total = int(args.push_rate * args.push_duration)
        run = secrets.token_hex(4)
        errors = 0
        start = clock["start"] = perf()
        for k in range(total):
            delay = start + k / args.push_rate - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            user = targets[k % len(targets)]
            event = events_pb2.FeedRefreshRequested(
                user_id=user.user_id, reason="bench", requested_at=time.time()
            )
            pending[user.user_id].append(perf())
            try:
                await js.publish(
                    subjects.REFRESH_REQUESTED,
                    event.SerializeToString(),
                    timeout=2.0,
                    headers={"Nats-Msg-Id": f"bench.{run}.{k}"},
                )
            except Exception:
                errors += 1
        rate = total / max(perf() - start, 1e-6)
        counters["total"] = total
        if len(latencies) >= total:
            drained.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), args.push_grace)
        latencies.sort()
        return PushResult(
            published=total,
            delivered=len(latencies),
            latencies=latencies,
            by_send=sorted(by_send),
            rate=rate,
            publish_errors=errors,
            unmatched=counters["unmatched"],
            sockets=len(sockets),
        )
    finally:
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await nc.close()


# --- the ceiling -------------------------------------------------------------------------


def serve_ceiling(port: int, body_file: Path) -> None:
    """A bare Starlette app on uvicorn answering the pre-rendered feed body."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    body = body_file.read_bytes()

    async def feed(request: Request) -> Response:
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/v1/feed", feed)])
    uvicorn.run(
        app,
        host=HOST,
        port=port,
        loop="uvloop",
        http="httptools",
        workers=1,
        log_level="warning",
        access_log=False,
    )


@dataclass
class Ceiling:
    body_file: Path
    cpus: str | None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        command = [
            *taskset_prefix(self.cpus),
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-ceiling",
            str(self.port),
            "--ceiling-body",
            str(self.body_file),
        ]
        self.process = subprocess.Popen(
            command, cwd=REPO, stdin=subprocess.DEVNULL, start_new_session=True
        )

    async def wait_ready(self, timeout: float = 20.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"ceiling server exited with {self.process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}{FEED_PATH}")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError("ceiling server did not answer")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None


# --- the benchmark -----------------------------------------------------------------------


@dataclass
class Results:
    feed: WrkResult | None = None
    paced: WrkResult | None = None
    paced_target: float = 0.0
    ceiling: WrkResult | None = None
    push: PushResult | None = None
    leftovers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    body_bytes: int = 0


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.1f} ms"


def print_table(results: Results) -> None:
    rows: list[tuple[str, str, str, str, str, str]] = []
    feed, ceiling, push = results.feed, results.ceiling, results.push
    if feed is not None:
        errors = f"{feed.non_2xx} non-2xx"
        if feed.socket_errors:
            errors += f", {feed.socket_errors} socket"
        rows.append(
            (
                "gateway GET /v1/feed, peak",
                f"{feed.rps:,.0f} req/s",
                _ms(feed.p50_ms),
                _ms(feed.p99_ms),
                errors,
                "(closed loop: as fast as it answers)",
            )
        )
    paced = results.paced
    if paced is not None:
        ok = paced.rps >= TARGET_FEED_RPS * 0.98 and paced.p99_ms < TARGET_FEED_P99_MS
        errors = f"{paced.non_2xx} non-2xx"
        if paced.socket_errors:
            errors += f", {paced.socket_errors} socket"
        rows.append(
            (
                f"gateway GET /v1/feed @ {results.paced_target:,.0f}/s",
                f"{paced.rps:,.0f} req/s",
                _ms(paced.p50_ms),
                _ms(paced.p99_ms),
                errors,
                f">=1,500 req/s, p99 < 50 ms: {'met' if ok else 'MISSED'}",
            )
        )
    if ceiling is not None:
        errors = f"{ceiling.non_2xx} non-2xx"
        if ceiling.socket_errors:
            errors += f", {ceiling.socket_errors} socket"
        rows.append(
            (
                "ceiling bare Starlette",
                f"{ceiling.rps:,.0f} req/s",
                _ms(ceiling.p50_ms),
                _ms(ceiling.p99_ms),
                errors,
                "(one core, same body)",
            )
        )
    if push is not None:
        ok = push.q_ms(0.99) < TARGET_PUSH_P99_MS and push.delivered == push.published
        rows.append(
            (
                "refresh -> socket",
                f"{push.rate:,.0f} events/s",
                _ms(push.q_ms(0.50)),
                _ms(push.q_ms(0.99)),
                f"{push.delivered}/{push.published} delivered",
                f"p99 < 250 ms, all delivered: {'met' if ok else 'MISSED'}",
            )
        )
    header = ("what", "rate", "p50", "p99", "errors / delivered", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    align = ["<", ">", ">", ">", ">", "<"]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths, strict=True))

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


async def bench(args: argparse.Namespace, workdir: Path, results: Results) -> None:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)

    wrk = ensure_wrk()
    tokens_file = workdir / "tokens.txt"
    body_file = workdir / "feed-body.json"
    cell = Cell(workdir / "cell", args.cell_cpus, gateway_feed_cache=not args.no_gateway_cache)
    cell.workdir.mkdir()
    try:
        t0 = time.monotonic()
        cell.start()
        print(f"cell: {cell.describe()}; log {cell.log_path}", flush=True)
        instances = await cell.wait_ready(args.startup_timeout)
        print(
            f"cell ready in {time.monotonic() - t0:.1f} s: {len(instances)} instances SERVING, "
            f"gateway :{cell.gateway_port}, push :{cell.push_port}",
            flush=True,
        )

        t0 = time.monotonic()
        users, retried = await sign_up_users(cell.gateway_url, args.users)
        print(
            f"signed up {len(users)} users in {time.monotonic() - t0:.1f} s"
            + (f" ({retried} signups retried after 503/504)" if retried else ""),
            flush=True,
        )
        t0 = time.monotonic()
        cold, body = await settle(cell.gateway_url, users, args.settle_timeout)
        print(
            f"feeds read and computed in {time.monotonic() - t0:.1f} s"
            + (f" ({cold} still cold)" if cold else "")
            + f"; feed body {len(body)} B",
            flush=True,
        )
        body_file.write_bytes(body)
        results.body_bytes = len(body)
        tokens_file.write_text("".join(f"{u.token}\n" for u in users))

        how = (
            f"wrk -t{args.threads} -c{args.connections} --latency, tokens of {len(users)} users"
            f" rotating; wrk on CPU {args.wrk_cpus or 'any'}, cell on CPU {args.cell_cpus or 'any'}"
        )
        print(f"feed: {how}; {args.warmup:g} s warm-up, {args.duration:g} s recorded", flush=True)
        if args.warmup > 0:
            await run_wrk(wrk, cell.gateway_url, tokens_file, args, args.warmup)
        cell.check_alive()
        watch = sorted(cell.snapshot())
        results.feed = await run_wrk(
            wrk, cell.gateway_url, tokens_file, args, args.duration, watch=watch
        )
        print(results.feed.text, flush=True)
        print(
            "CPU in the recorded window (% of one core, summed over replicas): "
            + cpu_line(results.feed.cpu),
            flush=True,
        )
        cell.check_alive()

        if args.rate > 0:
            # Fixed rate: calibrate the per-connection delay with a short run, then record.
            period_ms = args.connections * 1000.0 / args.rate
            delay = max(period_ms - 2.0, 0.5)
            probe = await run_wrk(wrk, cell.gateway_url, tokens_file, args, 4.0, delay_ms=delay)
            latency_ms = probe.requests and (args.connections * 1000.0 / probe.rps - delay)
            delay = max(period_ms - max(latency_ms, 0.0), 0.5)
            print(f"paced: {args.rate:g} req/s target, mean delay {delay:.1f} ms", flush=True)
            results.paced_target = args.rate
            results.paced = await run_wrk(
                wrk,
                cell.gateway_url,
                tokens_file,
                args,
                args.duration,
                watch=watch,
                delay_ms=delay,
            )
            print(results.paced.text, flush=True)
            print("CPU in the paced window: " + cpu_line(results.paced.cpu), flush=True)
            cell.check_alive()

        if args.push_users > 0 and args.push_duration > 0:
            print(
                f"refresh -> socket: {min(args.push_users, len(users))} sockets, "
                f"{args.push_rate:g} events/s for {args.push_duration:g} s",
                flush=True,
            )
            cpu_watch = CpuWatch([*sorted(cell.snapshot()), os.getpid()]).start()
            cpu_watch.labels[os.getpid()] = "bench (sockets, publisher)"
            results.push = await refresh_to_socket(cell, users, args)
            push_cpu = cpu_watch.stop()
            p = results.push
            print(
                f"  {p.delivered}/{p.published} frames, {p.unmatched} unmatched frames, "
                f"{p.publish_errors} publish errors; max {p.q_ms(1.0):.0f} ms",
                flush=True,
            )
            print(f"  p50 / p99 ms by 2-s slice of sends: {p.slices(2.0)}", flush=True)
            print(f"  CPU meanwhile: {cpu_line(push_cpu)}", flush=True)
    finally:
        print("stopping the cell (SIGINT, drain)", flush=True)
        t0 = time.monotonic()
        results.leftovers = await asyncio.to_thread(cell.stop)
        results.problems = cell.log_problems()
        results.warnings = cell.warnings
        print(
            f"cell stopped in {time.monotonic() - t0:.1f} s; "
            f"{len(results.leftovers)} processes left behind"
            + (f": {', '.join(results.leftovers)}" if results.leftovers else ""),
            flush=True,
        )

    if not args.skip_ceiling:
        ceiling = Ceiling(body_file, args.ceiling_cpus)
        try:
            ceiling.start()
            await ceiling.wait_ready()
            print(
                f"ceiling: bare Starlette on CPU {args.ceiling_cpus or 'any'}, "
                f"{results.body_bytes} B body",
                flush=True,
            )
            if args.warmup > 0:
                await run_wrk(wrk, ceiling.url, tokens_file, args, args.warmup)
            assert ceiling.process is not None
            results.ceiling = await run_wrk(
                wrk, ceiling.url, tokens_file, args, args.duration, watch=[ceiling.process.pid]
            )
            print(results.ceiling.text, flush=True)
            print(f"CPU in the recorded window: {cpu_line(results.ceiling.cpu)}", flush=True)
        finally:
            ceiling.stop()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="learnfeed GET /v1/feed and refresh->socket against a bare-Starlette ceiling."
    )
    parser.add_argument("--users", type=int, default=200, help="users signed up and read")
    parser.add_argument("--duration", type=float, default=15.0, help="recorded seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3.0, help="unrecorded wrk seconds first")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--no-gateway-cache",
        action="store_true",
        help="gateways do not keep feed versions: every read makes the feed hop",
    )
    parser.add_argument(
        "--rate", type=float, default=1500.0, help="fixed-rate run at this req/s (0: none)"
    )
    parser.add_argument("--push-users", type=int, default=200, help="users with a WebSocket")
    parser.add_argument("--push-rate", type=float, default=100.0, help="refresh events a second")
    parser.add_argument("--push-duration", type=float, default=12.0, help="seconds of events")
    parser.add_argument("--push-grace", type=float, default=5.0, help="seconds to wait for frames")
    parser.add_argument("--settle-timeout", type=float, default=30.0, help="for computed feeds")
    parser.add_argument("--startup-timeout", type=float, default=90.0, help="for the cell")
    parser.add_argument("--skip-ceiling", action="store_true", help="no bare-Starlette run")
    parser.add_argument("--wrk-cpus", default=None, help="taskset CPUs of wrk (default: first)")
    parser.add_argument(
        "--ceiling-cpus", default=None, help="taskset CPUs of the ceiling server (default: second)"
    )
    parser.add_argument("--cell-cpus", default=None, help="taskset CPUs of the cell (default: all)")
    parser.add_argument("--no-pin", action="store_true", help="pin nothing")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (logs) and say where"
    )
    parser.add_argument("--serve-ceiling", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ceiling-body", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.users < 1 or args.duration <= 0 or args.connections < 1 or args.threads < 1:
        parser.error("need --users >= 1, --duration > 0, --connections >= 1, --threads >= 1")
    if args.push_rate <= 0 or args.push_users < 0:
        parser.error("need --push-rate > 0 and --push-users >= 0")
    allowed = sorted(os.sched_getaffinity(0))
    if args.no_pin or shutil.which("taskset") is None:
        args.wrk_cpus = args.ceiling_cpus = args.cell_cpus = None
    else:
        if args.wrk_cpus is None:
            args.wrk_cpus = str(allowed[0]) if len(allowed) >= 2 else None
        if args.ceiling_cpus is None and len(allowed) >= 2:
            args.ceiling_cpus = ",".join(str(c) for c in allowed[1:])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_ceiling is not None:
        serve_ceiling(args.serve_ceiling, args.ceiling_body)
        return 0
    sys.path.insert(0, str(REPO / "src"))  # learnfeed's protos when run without install
    signal.signal(signal.SIGTERM, _on_sigterm)
    results = Results()
    import uvloop

    tmp = Path(tempfile.mkdtemp(prefix="cellwork-bench-feed-"))
    try:
        uvloop.run(bench(args, tmp, results))
    except (KeyboardInterrupt, Terminated, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, _on_sigterm)
        print(
            f"\ncell logs: {len(results.problems)} error lines or tracebacks, "
            f"{len(results.warnings)} warnings"
        )
        for line in [*results.problems[:8], *results.warnings[:4]]:
            print(f"  {line}")
        if args.keep:
            print(f"kept {tmp} (cell logs in {tmp / 'cell'})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        f"{args.users} users, wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s "
        f"(after {args.warmup:g} s warm-up), feed body {results.body_bytes} B; "
        f"cell: gateway, feed, catalog x2 (others as in cell.yaml); gateways keep feed "
        f"versions: {'no (every read calls feed)' if args.no_gateway_cache else 'yes'}"
    )
    print_table(results)
    if results.leftovers:
        print(f"processes left after stop (killed): {', '.join(results.leftovers)}")
    feed, ceiling = results.feed, results.ceiling
    ratio = feed.rps / ceiling.rps if feed and ceiling and ceiling.rps > 0 else float("nan")
    print(f"feed/ceiling req/s ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
