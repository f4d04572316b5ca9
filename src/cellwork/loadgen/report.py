"""How a run looks to a person: a live progress line while it runs, tables when it ends."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cellwork.loadgen.driver import LoadRun, Progress

REFRESH_PER_SECOND = 4


def render_progress(p: Progress) -> RenderableType:
    """Two lines: phase, a bar over the duration and the current rate; then the counters."""
    elapsed = min(p.elapsed, p.duration)
    head = Table.grid(padding=(0, 1))
    head.add_row(
        Text(f"{p.phase:<15}", style="bold"),
        ProgressBar(total=p.duration, completed=elapsed, width=30),
        Text(f"{elapsed:5.1f}/{p.duration:g}s  {p.rate:7.1f} req/s"),
    )
    errors = f"[red]{p.errors}[/]" if p.errors else "0"
    dropped = f"[yellow]{p.dropped}[/]" if p.dropped else "0"
    counters = Text.from_markup(
        f"sent {p.sent}/{p.planned}  ok {p.ok}  errors {errors}  dropped {dropped}  "
        f"in flight {p.in_flight}  feed.ready {p.ready}  users {p.users}  sockets {p.sockets}"
    )
    return Group(head, counters)


async def run_with_progress(run: LoadRun, console: Console) -> dict[str, Any]:
    """``run.run()`` under a live display on ``console`` (plain phase lines off a terminal)."""
    if not console.is_terminal:
        return await _run_with_phase_lines(run, console)
    with Live(
        render_progress(run.progress()),
        console=console,
        refresh_per_second=REFRESH_PER_SECOND,
        transient=True,
    ) as live:
        task = asyncio.create_task(run.run())
        while not task.done():
            await asyncio.wait([task], timeout=1 / REFRESH_PER_SECOND)
            live.update(render_progress(run.progress()))
        return await task


async def _run_with_phase_lines(run: LoadRun, console: Console) -> dict[str, Any]:
    task = asyncio.create_task(run.run())
    phase = ""
    while not task.done():
        await asyncio.wait([task], timeout=0.25)
        if run.phase != phase and not task.done():
            phase = run.phase
            console.print(f"loadgen: {phase}", highlight=False)
    return await task


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{key}: {count}" for key, count in errors.items()) or "-"


def render_summary(summary: dict[str, Any]) -> RenderableType:
    """The summary as tables: per route, then totals, errors, feed.ready, sign-up, sockets."""
    cfg, req = summary["config"], summary["requests"]
    mix = ",".join(f"{k}={v}" for k, v in cfg["mix"].items())
    routes = Table(
        title=f"loadgen: {cfg['rate']:g} req/s for {cfg['duration']:g}s, {cfg['users']} users, "
        f"{cfg['sockets']} sockets, mix {mix}",
        title_justify="left",
    )
    for name in ("route", "count", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"):
        routes.add_column(name, justify="left" if name in ("route", "errors") else "right")
    for name, route in summary["routes"].items():
        label = name
        if route.get("partial"):
            label = f"{name} ({route['partial']} partial)"
        routes.add_row(
            label,
            str(route["count"]),
            f"{route['rps']:.1f}",
            _ms(route["p50_ms"]),
            _ms(route["p90_ms"]),
            _ms(route["p99_ms"]),
            _ms(route["max_ms"]),
            _errors(route["errors"]),
        )
    routes.add_section()
    routes.add_row(
        "[bold]all[/]", str(req["completed"]), f"{req['rps']:.1f}", "", "", "", "",
        _errors(summary["errors_by_status"]),
    )  # fmt: skip

    ready = summary["feed_ready"]
    ready_table = Table(title="feed.ready delivery", title_justify="left")
    for name in ("timed", "p50 ms", "p99 ms", "frames", "untimed frames"):
        ready_table.add_column(name, justify="right")
    ready_table.add_row(
        str(ready["count"]),
        _ms(ready["p50_ms"]),
        _ms(ready["p99_ms"]),
        str(ready["frames"]),
        str(ready["untimed_frames"]),
    )
    signup, sockets = summary["signup"], summary["sockets"]
    lines = Text.from_markup(
        f"sent {req['sent']} of {req['planned']} planned in {summary['elapsed_s']:.1f}s"
        f"{' (stopped early)' if req.get('stopped_early') else ''}, "
        f"ok {req['ok']}, errors {req['errors']}, dropped {req['dropped']} "
        f"(in-flight bound {cfg['max_in_flight']}), send lag p99 {_ms(req['send_lag_p99_ms'])} ms\n"
        f"sign-up: {signup['ok']} ok, errors {_errors(signup['errors'])}, "
        f"p50 {_ms(signup['p50_ms'])} ms; sockets: {sockets['open']} open, "
        f"{sockets['failed']} failed, {sockets['drops']} dropped and reopened\n"
        f"latencies count from each request's scheduled send time (open loop)",
        overflow="fold",
    )
    note = Text(f"feed.ready: {ready['definition']}", style="dim", overflow="fold")
    return Group(routes, lines, Text(""), ready_table, note)
