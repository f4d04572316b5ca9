"""Unary RPC benchmark: a raw grpc.aio stub against the cellwork client, in one run.

Starts a private nats-server (JetStream) and two echo instances
(``cellwork serve cellwork.testing.echo``) on 127.0.0.1, then drives the same
two instances with two clients at each concurrency of ``--concurrency`` in
turn, alternating raw, cellwork, raw, cellwork... for ``--rounds`` rounds so
machine noise hits both alike:

    raw       one ``grpc.aio.insecure_channel`` per instance, calls alternate
              round-robin between the two stubs: ``await stub.Echo(req, timeout=5)``
    cellwork  ``connect_client(registry, "echo", echo_stub, caller="bench")``:
              ``await client.call("Echo", req, timeout=5.0)``: the whole call
              pipeline (deadline, retry budget, circuit breaker, concurrency
              limit), balancer pick, traceparent metadata, metrics
    raw+trace (``--with-trace``) the raw stub sending a fresh ``traceparent``
              on every call, as cellwork does: what trace propagation costs alone

Each run: that many worker coroutines loop calls for ``--warmup`` seconds (not
recorded), then ``--duration`` seconds recorded (every answer's latency, via
``time.perf_counter``). The first table shows, per concurrency and mode, the
median over rounds of calls/s, p50 and p99, the errors summed over rounds and
the bench process's CPU per call; the second, per concurrency, cellwork's
calls/s ratio and added p50 against raw and whether both meet the target
(>= 0.85, < 0.3 ms). The last line is ``cellwork/raw calls/s ratio: X.XX`` at
the highest concurrency.

At concurrency 1 the latency is the call itself; by 8 the servers' core is
busy and latency is mostly waiting: a closed loop of c callers on a saturated
core waits c x (server CPU per call), so there an added p50 reads the extra
server CPU per call multiplied by c.

With ``--pin`` (default on machines with two or more CPUs) the bench process
runs on the first allowed CPU and nats-server plus the echo instances on the
others, so client and servers do not steal each other's CPU.

Run from the repository root:

    .venv/bin/python bench/rpc.py [--with-trace --concurrency 1,8,64 --rounds 3 --duration 8]

Everything listens on 127.0.0.1 only; the processes it starts are stopped on
exit, on error, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from grpc import aio

from cellwork.config.settings import ServiceSettings
from cellwork.discovery.instance import InstanceInfo, InstanceStatus
from cellwork.discovery.registry import Registry
from cellwork.events.connection import connect_nats
from cellwork.observability.tracing import new_traceparent
from cellwork.rpc.client import Client, connect_client
from cellwork.rpc.context import TRACEPARENT_HEADER
from cellwork.runtime.nats_server import NatsServer
from cellwork.testing.echo import echo_stub
from cellwork.testing.v1 import echo_pb2, echo_pb2_grpc

SERVICE = "echo"
INSTANCE_IDS = ("echo-0", "echo-1")
# The bucket and TTL every instance reads from its settings by default.
REGISTRY_BUCKET = ServiceSettings().registry_bucket
REGISTRY_TTL = ServiceSettings().registry_ttl
HOST = "127.0.0.1"
MODES = ("raw", "cellwork")

CallFn = Callable[[int], Awaitable[Any]]


# --- results ------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank; NaN if empty."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass(slots=True)
class RunResult:
    """One timed run of one mode."""

    mode: str
    seconds: float
    latencies: list[float]
    errors: int
    cpu_seconds: float  # CPU time of the bench process (all threads) in the window
    first_error: str = ""

    @property
    def calls(self) -> int:
        return len(self.latencies)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_call(self) -> float:
        return self.cpu_seconds / self.calls * 1e6 if self.calls else float("nan")

    def quantile_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000.0


@dataclass(slots=True)
class ModeSummary:
    """Medians over the rounds of one mode."""

    mode: str
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    calls: int
    cpu_us_per_call: float

    @classmethod
    def of(cls, mode: str, runs: Sequence[RunResult]) -> ModeSummary:
        return cls(
            mode=mode,
            calls_per_s=statistics.median(r.calls_per_s for r in runs),
            p50_ms=statistics.median(r.quantile_ms(0.50) for r in runs),
            p99_ms=statistics.median(r.quantile_ms(0.99) for r in runs),
            errors=sum(r.errors for r in runs),
            calls=sum(r.calls for r in runs),
            cpu_us_per_call=statistics.median(r.cpu_us_per_call for r in runs),
        )


# --- load generator -----------------------------------------------------------


@dataclass(slots=True)
class _LoadState:
    recording: bool = False
    stop: bool = False
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


async def run_load(
    mode: str, call: CallFn, *, concurrency: int, warmup: float, duration: float
) -> RunResult:
    """Run ``concurrency`` workers looping ``call``; record the ``duration`` after ``warmup``.

    A call counts (latency and throughput) when it completes inside the
    recorded window; workers stop after their call in flight at the end.
    """
    state = _LoadState()
    perf_counter = time.perf_counter

    async def worker(index: int) -> None:
        n = index  # each worker alternates targets call by call, starting at its index
        latencies = state.latencies
        while not state.stop:
            start = perf_counter()
            try:
                await call(n)
            except Exception as exc:
                if state.recording:
                    state.errors += 1
                    if not state.first_error:
                        state.first_error = f"{type(exc).__name__}: {exc}"[:300]
                await asyncio.sleep(0.001)  # no hot loop when calls fail at once
            else:
                elapsed = perf_counter() - start
                if state.recording:
                    latencies.append(elapsed)
            n += 1

    gc.collect()
    tasks = [asyncio.create_task(worker(i), name=f"{mode}-worker-{i}") for i in range(concurrency)]
    try:
        await asyncio.sleep(warmup)
        state.recording = True
        window_start, cpu_start = perf_counter(), time.process_time()
        await asyncio.sleep(duration)
        state.recording = False
        seconds, cpu_seconds = perf_counter() - window_start, time.process_time() - cpu_start
        state.stop = True
        async with asyncio.timeout(15):  # every call has a 5 s deadline
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    state.latencies.sort()
    return RunResult(mode, seconds, state.latencies, state.errors, cpu_seconds, state.first_error)


# --- processes ----------------------------------------------------------------


def pin_process(pid: int, cpus: set[int]) -> None:
    """Set the CPU affinity of every thread of ``pid`` (threads made later inherit it)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        tids = [pid]
    for tid in tids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(tid, cpus)


@dataclass
class Cell:
    """nats-server plus the echo instances, all on 127.0.0.1 under one temp dir."""

    workdir: Path
    server_cpus: set[int] | None
    nats: NatsServer | None = None
    echoes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> None:
        self.nats = NatsServer(self.workdir / "nats", host=HOST).start()
        if self.server_cpus and self.nats.process is not None:
            pin_process(self.nats.process.pid, self.server_cpus)
        for instance_id in INSTANCE_IDS:
            env = {
                **os.environ,
                "CELLWORK_NATS_URL": self.nats.url,
                "CELLWORK_INSTANCE_ID": instance_id,
                "CELLWORK_HOST": HOST,
                "CELLWORK_GRPC_PORT": "0",
                "CELLWORK_METRICS_PORT": "0",
                "CELLWORK_REGISTRY_BUCKET": REGISTRY_BUCKET,
                "CELLWORK_LOG_LEVEL": "warning",
            }
            log = self.log_path(instance_id).open("wb")
            self.echoes[instance_id] = subprocess.Popen(
                [sys.executable, "-m", "cellwork", "serve", "cellwork.testing.echo"],
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the bench only; it stops them
            )
            log.close()
            if self.server_cpus:
                pin_process(self.echoes[instance_id].pid, self.server_cpus)

    def log_path(self, instance_id: str) -> Path:
        return self.workdir / f"{instance_id}.log"

    def check_alive(self) -> None:
        """Raise if an echo instance exited, with the tail of its log."""
        for instance_id, process in self.echoes.items():
            if process.poll() is not None:
                tail = self.log_path(instance_id).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{instance_id} exited with code {process.returncode}:\n{tail}")

    def repin(self) -> None:
        """Pin every thread the servers have started by now."""
        if not self.server_cpus:
            return
        if self.nats is not None and self.nats.process is not None:
            pin_process(self.nats.process.pid, self.server_cpus)
        for process in self.echoes.values():
            pin_process(process.pid, self.server_cpus)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the instances (they drain), SIGKILL after ``grace``; stop nats."""
        for process in self.echoes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.echoes.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(timeout=5)
        self.echoes.clear()
        if self.nats is not None:
            self.nats.stop()
            self.nats = None


async def wait_for_instances(registry: Registry, cell: Cell, timeout: float) -> list[InstanceInfo]:
    """Wait until the registry lists every echo instance as SERVING."""
    async with asyncio.timeout(timeout):
        while True:
            cell.check_alive()
            found = {
                info.instance_id: info
                for info in await registry.list(SERVICE)
                if info.status is InstanceStatus.SERVING
            }
            if all(i in found for i in INSTANCE_IDS):
                return [found[i] for i in INSTANCE_IDS]
            await asyncio.sleep(0.1)


# --- the benchmark ------------------------------------------------------------


TARGET_RATIO = 0.85  # issue's target: cellwork reaches >= 85 % of raw's calls/s ...
TARGET_ADDED_P50_MS = 0.3  # ... and adds under 0.3 ms at p50


def print_table(summaries: Sequence[tuple[int, ModeSummary]]) -> None:
    header = (
        f"{'concurrency':>11}  {'mode':<10} {'calls/s':>9} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'errors':>7} {'client us/call':>15}"
    )
    print(header)
    print("-" * len(header))
    for concurrency, s in summaries:
        print(
            f"{concurrency:>11}  {s.mode:<10} {s.calls_per_s:>9.0f} {s.p50_ms:>9.3f} "
            f"{s.p99_ms:>9.3f} {s.errors:>7d} {s.cpu_us_per_call:>15.0f}"
        )


def print_verdicts(by_concurrency: dict[int, dict[str, ModeSummary]], with_trace: bool) -> None:
    """Per concurrency: cellwork against raw (and raw+trace), and the issue's target."""
    header = f"{'concurrency':>11}  {'cellwork/raw calls/s':>20} {'added p50 ms':>13}"
    if with_trace:
        header += f" {'vs raw+trace: calls/s, p50 ms':>30}"
    header += "  target (>= 0.85, < 0.3 ms)"
    print(header)
    print("-" * len(header))
    for concurrency, modes in by_concurrency.items():
        raw, cw = modes["raw"], modes["cellwork"]
        ratio = cw.calls_per_s / raw.calls_per_s if raw.calls_per_s > 0 else float("nan")
        added = cw.p50_ms - raw.p50_ms
        line = f"{concurrency:>11}  {ratio:>20.2f} {added:>+13.3f}"
        if with_trace:
            traced = modes["raw+trace"]
            line += (
                f" {cw.calls_per_s / traced.calls_per_s:>21.2f}, {cw.p50_ms - traced.p50_ms:>+7.3f}"
            )
        met = ratio >= TARGET_RATIO and added < TARGET_ADDED_P50_MS
        print(line + ("  met" if met else "  not met"))


async def measure(
    args: argparse.Namespace,
    cell: Cell,
    calls: dict[str, CallFn],
    modes: Sequence[str],
    concurrency: int,
) -> dict[str, ModeSummary]:
    """Alternate the modes for ``args.rounds`` rounds at one concurrency; medians per mode."""
    results: dict[str, list[RunResult]] = {mode: [] for mode in modes}
    for round_no in range(1, args.rounds + 1):
        for mode in modes:
            if args.pin_enabled:
                pin_process(os.getpid(), args.client_cpus)  # grpc may have new threads
                cell.repin()
            cell.check_alive()
            run = await run_load(
                mode,
                calls[mode],
                concurrency=concurrency,
                warmup=args.warmup,
                duration=args.duration,
            )
            results[mode].append(run)
            print(
                f"c={concurrency} round {round_no}/{args.rounds} {mode:<9} "
                f"{run.calls_per_s:>7.0f} calls/s  p50 {run.quantile_ms(0.5):.3f} ms  "
                f"p99 {run.quantile_ms(0.99):.3f} ms  errors {run.errors}  "
                f"client CPU {run.cpu_us_per_call:.0f} us/call"
                + (f"  (first: {run.first_error})" if run.first_error else ""),
                flush=True,
            )
    return {mode: ModeSummary.of(mode, results[mode]) for mode in modes}


async def bench(args: argparse.Namespace, cell: Cell) -> None:
    # SIGTERM cancels the run like Ctrl-C, so every finally below (and main's) runs.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)

    assert cell.nats is not None
    nc = await connect_nats(cell.nats.url, "bench-rpc")
    channels: list[aio.Channel] = []
    client: Client[echo_pb2_grpc.EchoStub] | None = None
    try:
        registry = await Registry.open(nc, REGISTRY_BUCKET, REGISTRY_TTL)
        instances = await wait_for_instances(registry, cell, timeout=30.0)
        cell.repin()
        print("echo instances: " + ", ".join(f"{i.instance_id} {i.address}" for i in instances))

        # (a) raw: one channel and stub per instance, round-robin by call number.
        channels = [aio.insecure_channel(info.address) for info in instances]
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=10)
        stubs = [echo_pb2_grpc.EchoStub(channel) for channel in channels]

        # (b) cellwork: balancer fed by the registry watcher.
        client = await connect_client(registry, SERVICE, echo_stub, caller="bench")
        await client.balancer.wait_for_endpoints(len(INSTANCE_IDS))

        request = echo_pb2.EchoRequest(payload=b"x" * args.payload_bytes)
        n_stubs = len(stubs)

        def raw_call(n: int) -> Awaitable[Any]:
            return stubs[n % n_stubs].Echo(request, timeout=5)

        # (a') raw with the one header cellwork sends on every call (traceparent, a
        # fresh span id each time): what propagating trace context costs by itself.
        def raw_traced_call(n: int) -> Awaitable[Any]:
            traced = ((TRACEPARENT_HEADER, new_traceparent()),)
            return stubs[n % n_stubs].Echo(request, timeout=5, metadata=traced)

        cellwork_client = client

        def cellwork_call(n: int) -> Awaitable[Any]:
            return cellwork_client.call("Echo", request, timeout=5.0)

        calls: dict[str, CallFn] = {
            "raw": raw_call,
            "cellwork": cellwork_call,
            "raw+trace": raw_traced_call,
        }
        modes = (*MODES, "raw+trace") if args.with_trace else MODES
        for call in calls.values():  # both paths answer before anything is timed
            await call(0)
            await call(1)

        by_concurrency: dict[int, dict[str, ModeSummary]] = {}
        for concurrency in args.concurrency:
            by_concurrency[concurrency] = await measure(args, cell, calls, modes, concurrency)

        print()
        print(
            f"median of {args.rounds} rounds per concurrency, {args.duration:g} s per run "
            f"after {args.warmup:g} s warm-up, payload {args.payload_bytes} B, 2 echo instances"
        )
        print_table([(c, s) for c, modes_ in by_concurrency.items() for s in modes_.values()])
        print()
        print_verdicts(by_concurrency, args.with_trace)
        top = max(by_concurrency)
        raw, cw = by_concurrency[top]["raw"], by_concurrency[top]["cellwork"]
        ratio = cw.calls_per_s / raw.calls_per_s if raw.calls_per_s > 0 else float("nan")
        print(f"at concurrency {top}: cellwork adds {cw.p50_ms - raw.p50_ms:+.3f} ms at p50")
        print(f"cellwork/raw calls/s ratio: {ratio:.2f}")
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        for channel in channels:
            with contextlib.suppress(Exception):
                await channel.close(grace=None)
        with contextlib.suppress(Exception):
            await nc.close()


def _concurrencies(text: str) -> list[int]:
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of integers: {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("concurrencies must be integers >= 1")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare unary gRPC throughput and latency: raw grpc.aio stub vs cellwork."
    )
    parser.add_argument("--duration", type=float, default=8.0, help="recorded seconds per run")
    parser.add_argument("--warmup", type=float, default=1.5, help="unrecorded seconds per run")
    parser.add_argument(
        "--concurrency",
        type=_concurrencies,
        default=[1, 8, 64],
        help="concurrent callers, a comma list measured in turn (default 1,8,64)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="raw+cellwork runs to take medians")
    parser.add_argument("--payload-bytes", type=int, default=64, help="request payload size")
    parser.add_argument(
        "--with-trace",
        action="store_true",
        help="also run raw calls carrying a traceparent header (what propagation costs alone)",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="pin the bench to one CPU and the servers to the others (default: on if >= 2 CPUs)",
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error("need --duration > 0, --warmup >= 0, --rounds >= 1")
    if args.payload_bytes < 0:
        parser.error("--payload-bytes must be >= 0")
    return args


class Terminated(BaseException):
    """SIGTERM arrived outside the event loop (starting or stopping the cell)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    allowed = sorted(os.sched_getaffinity(0))
    args.pin_enabled = bool(args.pin) and len(allowed) >= 2
    args.client_cpus = {allowed[0]}
    server_cpus = set(allowed[1:]) if args.pin_enabled else None
    if args.pin_enabled:
        pin_process(os.getpid(), args.client_cpus)
        print(
            f"pinned: bench client -> CPU {sorted(args.client_cpus)}; "
            f"nats-server, {', '.join(INSTANCE_IDS)} -> CPU {sorted(server_cpus or ())}"
        )
    elif args.pin:
        print(f"not pinned: only CPU {allowed} allowed")
    else:
        print("not pinned (--no-pin)")

    with tempfile.TemporaryDirectory(prefix="cellwork-bench-rpc-") as tmp:
        cell = Cell(Path(tmp), server_cpus)
        try:
            cell.start()
            uvloop.run(bench(args, cell))
        except (KeyboardInterrupt, Terminated, asyncio.CancelledError):
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            signal.signal(signal.SIGTERM, _on_sigterm)  # the loop reset it on close
            cell.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
