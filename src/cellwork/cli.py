"""The ``cellwork`` command: thin typer commands over the runtime."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cellwork.cli_chaos import chaos
from cellwork.cli_config import config_app
from cellwork.cli_dlq import dlq_app
from cellwork.cli_support import (
    CellFile,
    CellName,
    CellOption,
    StateDir,
    console,
    err,
    fail,
    find_cell,
)
from cellwork.errors import CellworkError, Unavailable
from cellwork.runtime.cellfile import CellFileError
from cellwork.runtime.cells import resolve_cell
from cellwork.runtime.control import STATE_FILE, CellState, request
from cellwork.runtime.serve import run_forever
from cellwork.stream import DEFAULT_URL, TOKEN_ENV

if TYPE_CHECKING:
    from cellwork.observability.resilience_view import CallsRow, SheddingRow

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.command()
def up(
    name: CellName = None,
    file: CellFile = None,
    demo: Annotated[bool, typer.Option("--demo", help="seed demo data")] = False,
    nats_url: Annotated[
        str | None, typer.Option("--nats-url", help="use this NATS instead of starting one")
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Start a cell in the foreground; Ctrl-C drains it, a second Ctrl-C kills it.

    NAME is a cell an installed application registered; -f FILE runs a cell file."""
    from cellwork.observability.logging import configure_logging
    from cellwork.runtime.events import SignalReceived
    from cellwork.runtime.supervisor import Supervisor

    try:
        spec = resolve_cell(name, file)
        if demo:  # a cell-wide default; a service's own env may still say otherwise
            spec = spec.model_copy(update={"env": {"CELLWORK_DEMO": "1", **spec.env}})
        if state_dir is not None:
            spec = spec.model_copy(update={"state_dir": state_dir})
        supervisor = Supervisor(spec, nats_url=nats_url)
    except CellFileError as exc:
        raise fail(str(exc), 2) from None
    try:  # here, so that a directory it may not write is a message, not a traceback
        supervisor.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(
            f"cannot create the state directory {supervisor.state_dir}: {exc.strerror}"
            " (run from a writable directory or pass --state-dir)",
            2,
        ) from None
    configure_logging("info", pretty=sys.stderr.isatty(), cell=spec.name)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, supervisor.post, SignalReceived(signum))
        await supervisor.run()

    try:
        run_forever(main())
    except CellworkError as exc:  # nats-server did not start, the cell already runs
        raise fail(exc.message) from None


@app.command()
def serve(module: Annotated[str, typer.Argument(help="module with create_service()")]) -> None:
    """Run one instance of the service in MODULE (what the cell starts per replica)."""
    from cellwork.runtime.serve import serve as serve_module

    raise typer.Exit(serve_module(module))


@app.command()
def probe(
    address: Annotated[
        str | None, typer.Option(help="host:port; default 127.0.0.1:$CELLWORK_GRPC_PORT")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds")] = 2.0,
) -> None:
    """Exit 0 when the instance answers the gRPC health check SERVING, or, where a cell
    runs from this directory (`cellwork up`), when its supervisor answers (container
    health: the image's HEALTHCHECK serves `serve` and `up` alike)."""
    from cellwork.runtime.health import HealthProbe

    if address is None:
        cells = sorted(Path.cwd().glob(f".cellwork/*/{STATE_FILE}"))
        if cells:
            state = CellState.read(cells[0].parent)
            try:
                run_forever(request(state, "status", {}, timeout=timeout))
            except CellworkError as exc:
                raise fail(exc.message) from None
            return
        port = os.environ.get("CELLWORK_GRPC_PORT", "")
        if not port.isdigit() or port == "0":
            raise fail("set --address or CELLWORK_GRPC_PORT to a fixed port", 2)
        address = f"127.0.0.1:{port}"

    async def check() -> bool:
        health = HealthProbe(timeout)
        try:
            return await health.check(address)
        finally:
            await health.close()

    if not run_forever(check()):
        raise fail(f"{address} is not SERVING")


@app.command()
def status(
    name: CellName = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show every instance of the running cell NAME (started from this directory)."""
    state = find_cell(name, file, state_dir)
    try:
        result: Any = run_forever(request(state, "status", {}, timeout=5))
    except CellworkError as exc:
        raise fail(exc.message) from None
    lag = _consumer_lag(state.nats_url)
    calls, shedding = _pipeline_view(result["instances"])
    if as_json:
        views = {
            "consumers": lag,
            "calls": [row.as_json() for row in calls],
            "shedding": [row.as_json() for row in shedding],
        }
        print(json.dumps({**result, **views}, indent=2))
        return
    table = Table(title=f"cell {result['cell']}")
    for column in ("service", "id", "pid", "address", "metrics", "status", "restarts", "uptime"):
        table.add_column(column)
    colors = {"SERVING": "green", "STARTING": "yellow", "DRAINING": "yellow", "BACKOFF": "red"}
    for inst in result["instances"]:
        color = colors.get(inst["status"], "red")
        table.add_row(
            inst["service"],
            inst["id"],
            str(inst["pid"] or "-"),
            f"{inst['host']}:{inst['grpc_port']}" if inst["grpc_port"] else "-",
            str(inst["metrics_port"] or "-"),
            f"[{color}]{inst['status']}[/]",
            str(inst["restarts"]),
            f"{inst['uptime']:.0f}s",
        )
    console.print(table)
    console.print(_nats_line(result.get("nats", {})))
    _print_pipeline_view(calls, shedding)
    _print_consumer_lag(lag)


def _pipeline_view(
    instances: list[dict[str, Any]],
) -> tuple[list[CallsRow], list[SheddingRow]]:
    """Breakers, ejections, retries and shedding, from the instances' metrics."""
    from cellwork.observability.resilience_view import scrape, summarize

    serving = [i for i in instances if i["status"] == "SERVING"]
    return summarize(run_forever(scrape(serving)))


def _print_pipeline_view(calls: list[CallsRow], shedding: list[SheddingRow]) -> None:
    if calls:
        table = Table(title="calls (caller -> target)")
        for column in ("caller", "target", "breaker", "ejected", "retries", "no budget", "refused"):
            table.add_column(column)
        colors = {"closed": "green", "half-open": "yellow", "open": "red"}
        for row in calls:
            table.add_row(
                row.caller,
                row.target,
                f"[{colors[row.breaker]}]{row.breaker}[/]",
                str(row.ejected),
                str(row.retries),
                str(row.budget_exhausted),
                str(row.rejected),
            )
        console.print(table)
    shed = [method for method in shedding if method.shed]
    if shed:
        table = Table(title="shedding (methods that shed calls)")
        for column in ("service", "method", "limit", "shed"):
            table.add_column(column)
        for method in shed:
            low, high = method.limit_min, method.limit_max
            limit = str(low) if low == high else f"{low}-{high}"
            table.add_row(method.service, method.method, limit, str(method.shed))
        console.print(table)


def _nats_line(nats: dict[str, Any]) -> str:
    """The cell's NATS in one line under the status table."""
    if not nats.get("embedded"):
        return f"nats {nats.get('url', '?')}: external (not kept by this cell)"
    restarts = f"{nats['restarts']} restart{'' if nats['restarts'] == 1 else 's'}"
    if nats["state"] == "up":
        return f"nats {nats['url']}: [green]up[/] (pid {nats['pid']}, {restarts})"
    return f"nats {nats['url']}: [red]{nats['state']}[/] for {nats['down_for']:.0f}s ({restarts})"


def _consumer_lag(nats_url: str) -> list[dict[str, Any]]:
    """Each durable consumer's backlog and dead letters; empty (with a warning) when the
    cell's NATS does not answer the question."""
    from cellwork.events.connection import jetstream_session
    from cellwork.events.lag import consumer_lag

    async def query() -> list[dict[str, Any]]:
        async with jetstream_session(nats_url, "cellwork-status") as js:
            return [row.as_json() for row in await consumer_lag(js)]

    try:
        return run_forever(query())
    except CellworkError as exc:
        err.print(f"[yellow]consumer lag unavailable:[/] {escape(exc.message)}", soft_wrap=True)
        return []


def _print_consumer_lag(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title="consumers")
    for column in ("stream", "durable", "pending", "in flight", "redelivered", "dead letters"):
        table.add_column(column)
    for row in rows:
        dead = row["dead_letters"]
        table.add_row(
            row["stream"],
            row["durable"],
            str(row["pending"]),
            str(row["in_flight"]),
            str(row["redelivered"]),
            f"[red]{dead}[/]" if dead else "0",
        )
    console.print(table)


@app.command()
def scale(
    service: Annotated[str, typer.Argument(help="service name in the cell file")],
    replicas: Annotated[int, typer.Argument(help="number of instances", min=0, max=64)],
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
) -> None:
    """Set the number of instances of SERVICE in the running cell."""
    state = find_cell(cell, file, state_dir)
    payload = {"service": service, "replicas": replicas}
    try:
        result: Any = run_forever(request(state, "scale", payload, timeout=15))
    except CellworkError as exc:
        raise fail(exc.message) from None
    console.print(f"{result['service']}: {result['before']} -> {result['after']} instances")


ROLLOUT_POLL = 0.5  # seconds between looks at a rolling restart's progress


@app.command()
def restart(
    service: Annotated[str, typer.Argument(help="service name in the cell file")],
    rolling: Annotated[
        bool,
        typer.Option("--rolling", help="one instance at a time, the new one serving first"),
    ] = False,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
) -> None:
    """Replace every instance of SERVICE, one at a time: start a new one, wait until it
    serves, then drain the old one. Prints each step; exits 0 when all are replaced, 1
    with the reason when the supervisor refuses or a new instance does not start (the
    old one keeps serving). Ctrl-C stops watching, not the restart."""
    if not rolling:
        raise fail("say --rolling: restarting every instance at once would drop calls", 2)
    state = find_cell(cell, file, state_dir)

    async def follow() -> dict[str, Any]:
        rollout: dict[str, Any] = await request(state, "restart", {"service": service}, 15)
        shown = 0
        while True:
            for step in rollout["steps"][shown:]:
                console.print(escape(step), soft_wrap=True)
            shown = len(rollout["steps"])
            if rollout["state"] != "running":
                return rollout
            await asyncio.sleep(ROLLOUT_POLL)
            status = await request(state, "status", {}, 15)
            number = rollout["number"]
            found = [r for r in status["rollouts"] if r["number"] == number]
            if not found:  # the supervisor was restarted meanwhile
                raise Unavailable(f"the cell no longer knows rolling restart {number}")
            rollout = found[0]

    try:
        ended = run_forever(follow())
    except CellworkError as exc:
        raise fail(exc.message) from None
    if ended["state"] != "done":
        raise fail(ended["reason"])


@app.command()
def stream(
    url: Annotated[str, typer.Option(help="the push socket")] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(
            envvar=TOKEN_ENV,
            help="access token, sent as Authorization: Bearer",
            show_default=False,
        ),
    ] = None,
    topics: Annotated[
        list[str] | None,
        typer.Option("--topic", help="topic to subscribe to, repeated for more (default: feed)"),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="exit after N frames the server pushes: every frame but ping, pong and "
            "subscribed (acks) counts",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="stop after SECONDS; with --count, fail if fewer came"),
    ] = None,
    ping_interval: Annotated[
        float, typer.Option(min=0, help="seconds between keep-alive pings (0: none)")
    ] = 30.0,
) -> None:
    """Print a push socket's frames as they come, one JSON object a line.

    It subscribes by itself and never reads the terminal, so `&` runs it in the
    background of a shell. Pongs answering its own keep-alive pings are left out.

    Exit 0: after --count frames, at --timeout without --count, on Ctrl-C/SIGTERM.
    Exit 1: the socket refused (HTTP 403: a bad token), the server unreachable or
    closing the socket first, or --timeout before --count frames came.
    """
    from cellwork.stream import StreamError, StreamOptions, follow

    try:
        options = StreamOptions(
            url=url,
            token=token or None,
            topics=tuple(topics or ("feed",)),
            count=count,
            timeout=timeout,
            ping_interval=ping_interval,
        )
    except ValueError as exc:
        raise fail(str(exc), 2) from None

    def emit(line: str) -> None:
        print(line, flush=True)  # each frame as it comes, also into a file or a pipe

    try:
        run_forever(follow(options, emit))
    except StreamError as exc:
        raise fail(str(exc)) from None
    except BrokenPipeError:  # whoever read the output has gone (| head -1): done
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@app.command(
    context_settings={
        # What loadgen does not know is the scenario's: parsed by load_scenario.
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],  # --help below also shows the scenario's options
    }
)
def loadgen(
    ctx: typer.Context,
    scenario: Annotated[
        str, typer.Option(help="module with create_scenario(); its own options follow")
    ] = "cellwork.loadgen.http",
    rate: Annotated[float, typer.Option(help="requests a second, the whole mix together")] = 200.0,
    duration: Annotated[float, typer.Option(help="seconds of load")] = 30.0,
    max_in_flight: Annotated[
        int, typer.Option(min=1, help="requests in flight at most; more due are dropped")
    ] = 256,
    timeout: Annotated[float, typer.Option(help="seconds per request")] = 5.0,
    max_send_lag: Annotated[
        float,
        typer.Option(help="seconds the client may send late (p99) before the run is inconclusive"),
    ] = 0.01,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    show_help: Annotated[
        bool, typer.Option("--help", help="show this message and the scenario's options")
    ] = False,
) -> None:
    """Send a scenario's requests on an open-loop schedule, show progress, summarize."""
    from cellwork.loadgen import (
        LoadConfig,
        LoadgenError,
        LoadRun,
        ScenarioLoadError,
        ScenarioUsage,
        load_scenario,
        print_scenario_help,
        render_summary,
        run_with_progress,
    )

    try:
        if show_help:
            text = ctx.get_help()  # typer prints rich help itself and returns ""
            if text:
                print(text)
            print_scenario_help(scenario)
            raise typer.Exit(0)
        config = LoadConfig(
            rate=rate,
            duration=duration,
            max_in_flight=max_in_flight,
            timeout=timeout,
            max_send_lag=max_send_lag,
        )
        reserved = {opt for param in ctx.command.params for opt in param.opts}
        loaded = load_scenario(scenario, ctx.args, reserved)
    except (ValueError, ScenarioLoadError) as exc:
        raise fail(str(exc), 2) from None
    except ScenarioUsage as exc:  # typer has printed the usage error or the help
        raise typer.Exit(exc.exit_code) from None
    run = LoadRun(config, loaded.scenario, name=loaded.module, options=loaded.options)

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()

        def interrupted() -> None:  # first Ctrl-C: stop sending and report; second: abort
            run.stop()
            loop.remove_signal_handler(signal.SIGINT)

        loop.add_signal_handler(signal.SIGINT, interrupted)
        return await run_with_progress(run, err)

    try:
        summary = run_forever(main())
    except LoadgenError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        console.print(render_summary(summary))


app.add_typer(chaos, name="chaos")
app.add_typer(config_app, name="config")
app.add_typer(dlq_app, name="dlq")


def main() -> None:
    """Entry point of the ``cellwork`` script."""
    app(prog_name="cellwork")


if __name__ == "__main__":
    main()
    sys.exit(0)
