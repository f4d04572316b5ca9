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
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from feedbench.ceiling import Ceiling, serve_ceiling
from feedbench.cell import Cell
from feedbench.local import REPO
from feedbench.procs import CpuWatch, cpu_line
from feedbench.push import PushResult, refresh_to_socket
from feedbench.users import settle, sign_up_users
from feedbench.wrk import WrkResult, ensure_wrk, run_wrk

TARGET_FEED_RPS = 1500.0
TARGET_FEED_P99_MS = 50.0
TARGET_PUSH_P99_MS = 250.0


class Terminated(BaseException):
    """SIGTERM arrived."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


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
