"""How a run looks to a person: a live progress line while it runs, tables when it ends."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cellwork.loadgen.engine import LoadRun, Progress

REFRESH_PER_SECOND = 4
NOTE_LENGTH = 60  # a section's text longer than this is a note under its table, not a cell


def _count(value: int | float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


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
    extra = "".join(f"  {name} {_count(value)}" for name, value in p.extra)
    counters = Text.from_markup(
        f"sent {p.sent}/{p.planned}  ok {p.ok}  errors {errors}  dropped {dropped}  "
        f"in flight {p.in_flight}{extra}"
    )
    return Group(head, counters)


async def run_with_progress(run: LoadRun[Any], console: Console) -> dict[str, Any]:
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


async def _run_with_phase_lines(run: LoadRun[Any], console: Console) -> dict[str, Any]:
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


def _errors(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{key}: {count}" for key, count in errors.items()) or "-"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return _errors(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def render_section(name: str, section: Mapping[str, Any]) -> RenderableType:
    """A scenario's section: its short values as one table row, long texts as notes below."""
    table = Table(title=name.replace("_", " "), title_justify="left")
    notes = []
    cells = []
    for key, value in section.items():
        if isinstance(value, str) and len(value) > NOTE_LENGTH:
            notes.append(Text(f"{key}: {value}", style="dim", overflow="fold"))
            continue
        table.add_column(
            key.replace("_", " "), justify="left" if isinstance(value, str) else "right"
        )
        cells.append(_cell(value))
    if cells:
        table.add_row(*cells)
    return Group(table, *notes) if cells else Group(*notes)


def render_summary(summary: Mapping[str, Any]) -> RenderableType:
    """The summary as tables: per route with totals, the run's lines, then each section."""
    cfg, req, client = summary["config"], summary["requests"], summary["client"]
    options = ", ".join(
        f"{key}={value}" for key, value in cfg.get("options", {}).items() if value is not None
    )
    routes = Table(
        title=f"loadgen {cfg['scenario']}: {cfg['rate']:g} req/s for {cfg['duration']:g}s"
        + (f" ({options})" if options else ""),
        title_justify="left",
    )
    for name in ("route", "count", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"):
        routes.add_column(name, justify="left" if name in ("route", "errors") else "right")
    for name, route in summary["routes"].items():
        routes.add_row(
            name,
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
    lines = Text.from_markup(
        f"sent {req['sent']} of {req['planned']} planned in {summary['elapsed_s']:.1f}s"
        f"{' (stopped early)' if req.get('stopped_early') else ''}, "
        f"ok {req['ok']}, errors {req['errors']}, dropped {req['dropped']} "
        f"(in-flight bound {cfg['max_in_flight']})\n"
        f"send lag p50 {_ms(client['send_lag_p50_ms'])} ms, p99 {_ms(client['send_lag_p99_ms'])} "
        f"ms, max {_ms(client['send_lag_max_ms'])} ms; "
        f"latencies count from each request's scheduled send time (open loop)",
        overflow="fold",
    )
    parts: list[RenderableType] = [routes, lines]
    if not summary["conclusive"]:
        parts.append(
            Text.from_markup(
                f"[bold red]inconclusive:[/] the client fell behind its own schedule (send lag "
                f"p99 {_ms(client['send_lag_p99_ms'])} ms > {_ms(client['max_send_lag_ms'])} ms): "
                "these latencies are partly the client's. Lower --rate, or give the client "
                "a core of its own.",
                overflow="fold",
            )
        )
    for name, section in summary.get("sections", {}).items():
        parts += [Text(""), render_section(name, section)]
    return Group(*parts)
