"""The ``cellwork`` command: thin typer commands over the runtime."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cellwork.errors import CellworkError
from cellwork.runtime.cellfile import CellFileError
from cellwork.runtime.cells import resolve_cell
from cellwork.runtime.control import STATE_FILE, CellState, request
from cellwork.runtime.serve import run_forever
from cellwork.stream import DEFAULT_URL, TOKEN_ENV

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

    from cellwork.events.deadletters import DeadLetter

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()
err = Console(stderr=True)

# A cell is found by the name an application registered it under (the entry-point
# group cellwork.cells, see runtime/cells.py), by -f FILE, or, with neither, as the
# only registered cell; never through a path into a source tree.
CellName = Annotated[
    str | None,
    typer.Argument(
        metavar="NAME",
        help="a registered cell (default: the only one registered)",
        show_default=False,
    ),
]
CellOption = Annotated[
    str | None,
    typer.Option("--cell", help="a registered cell (default: the only one registered)"),
]
CellFile = Annotated[
    Path | None, typer.Option("-f", "--file", help="a cell file instead of a registered cell")
]
StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", help="the cell's state directory (default .cellwork/<cell>)"),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    # Not wrapped at the terminal's width: paths and commands stay whole to copy.
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


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
        raise _fail(str(exc), 2) from None
    try:  # here, so that a directory it may not write is a message, not a traceback
        supervisor.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(
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
        raise _fail(exc.message) from None


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
                raise _fail(exc.message) from None
            return
        port = os.environ.get("CELLWORK_GRPC_PORT", "")
        if not port.isdigit() or port == "0":
            raise _fail("set --address or CELLWORK_GRPC_PORT to a fixed port", 2)
        address = f"127.0.0.1:{port}"

    async def check() -> bool:
        health = HealthProbe(timeout)
        try:
            return await health.check(address)
        finally:
            await health.close()

    if not run_forever(check()):
        raise _fail(f"{address} is not SERVING")


def _state(name: str | None, file: Path | None, state_dir: Path | None) -> CellState:
    """The running cell's published state: from ``--state-dir``, else from the state
    directory of the cell NAME or -f FILE (or the only registered one) under this one."""
    if state_dir is None:
        try:
            state_dir = resolve_cell(name, file).resolved_state_dir(Path.cwd())
        except CellFileError as exc:
            raise _fail(f"{exc}\n(or pass --state-dir to find a running cell)", 2) from None
    try:
        return CellState.read(state_dir)
    except CellworkError as exc:
        raise _fail(exc.message) from None


@app.command()
def status(
    name: CellName = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show every instance of the running cell NAME (started from this directory)."""
    state = _state(name, file, state_dir)
    try:
        result: Any = run_forever(request(state, "status", {}, timeout=5))
    except CellworkError as exc:
        raise _fail(exc.message) from None
    lag = _consumer_lag(state.nats_url)
    if as_json:
        print(json.dumps({**result, "consumers": lag}, indent=2))
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
    _print_consumer_lag(lag)


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
    state = _state(cell, file, state_dir)
    payload = {"service": service, "replicas": replicas}
    try:
        result: Any = run_forever(request(state, "scale", payload, timeout=15))
    except CellworkError as exc:
        raise _fail(exc.message) from None
    console.print(f"{result['service']}: {result['before']} -> {result['after']} instances")


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
        raise _fail(str(exc), 2) from None

    def emit(line: str) -> None:
        print(line, flush=True)  # each frame as it comes, also into a file or a pipe

    try:
        run_forever(follow(options, emit))
    except StreamError as exc:
        raise _fail(str(exc)) from None
    except BrokenPipeError:  # whoever read the output has gone (| head -1): done
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


chaos = typer.Typer(no_args_is_help=True, help="Break a running cell on purpose, to watch it heal.")
chaos_nats = typer.Typer(no_args_is_help=True, help="Faults of the cell's embedded nats-server.")
chaos.add_typer(chaos_nats, name="nats")
app.add_typer(chaos, name="chaos")
Instance = Annotated[
    str | None, typer.Option("--instance", help="an instance id (default: the first running one)")
]


def _control(
    verb: str, payload: dict[str, Any], cell: str | None, file: Path | None, state_dir: Path | None
) -> Any:
    """Send one control request to the running cell; exits 1 with the reason if refused."""
    state = _state(cell, file, state_dir)
    try:
        return run_forever(request(state, verb, payload, timeout=15))
    except CellworkError as exc:
        raise _fail(exc.message) from None


@chaos.command("kill")
def chaos_kill(
    service: Annotated[str, typer.Argument(help="service name in the cell file")],
    instance: Instance = None,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
) -> None:
    """SIGKILL one instance of SERVICE; the supervisor restarts it as after a crash."""
    done = _control("kill", {"service": service, "instance": instance}, cell, file, state_dir)
    console.print(f"killed {done['instance']} (pid {done['pid']}) with SIGKILL")


@chaos.command("pause")
def chaos_pause(
    service: Annotated[str, typer.Argument(help="service name in the cell file")],
    seconds: Annotated[
        float, typer.Option("--for", help="seconds to keep it stopped", min=0.001, max=3600)
    ],
    instance: Instance = None,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
) -> None:
    """SIGSTOP one instance of SERVICE; the supervisor sends SIGCONT after --for seconds
    (unless its hang detection has replaced it by then)."""
    payload = {"service": service, "instance": instance, "seconds": seconds}
    done = _control("pause", payload, cell, file, state_dir)
    console.print(f"paused {done['instance']} (pid {done['pid']}) for {done['seconds']:g}s")


@chaos_nats.command("restart")
def chaos_nats_restart(
    down: Annotated[
        float,
        typer.Option(help="seconds it stays down (0: the supervisor's usual restart)", min=0),
    ] = 0.0,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
) -> None:
    """SIGKILL the cell's embedded nats-server; the supervisor starts it again on the
    same port with the same store."""
    done = _control("nats_restart", {"down": down}, cell, file, state_dir)
    after = f"after {down:g}s" if down else "after its usual back-off"
    console.print(f"killed nats-server (pid {done['pid']}) at {done['url']}; it restarts {after}")


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
        raise _fail(str(exc), 2) from None
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
        raise _fail(str(exc)) from None
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        console.print(render_summary(summary))


dlq_app = typer.Typer(
    no_args_is_help=True,
    help="The dead-letter stream: list, replay or drop the messages consumers gave up on.",
)
app.add_typer(dlq_app, name="dlq")

NatsUrl = Annotated[
    str | None,
    typer.Option("--nats-url", help="this NATS instead of the running cell's (cell.json)"),
]
Seqs = Annotated[
    list[int] | None,
    typer.Argument(metavar="SEQ...", help="dead letters by sequence (see dlq list)"),
]
AllOfThem = Annotated[bool, typer.Option("--all", help="every dead letter there is now")]


def _run_dlq(nats_url: str, action: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    from cellwork.events.connection import jetstream_session

    async def run() -> T:
        async with jetstream_session(nats_url, "cellwork-dlq") as js:
            return await action(js)

    try:
        return run_forever(run())
    except CellworkError as exc:
        raise _fail(exc.message) from None


def _dlq_url(cell: str | None, file: Path | None, state_dir: Path | None, url: str | None) -> str:
    return url or _state(cell, file, state_dir).nats_url


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@dlq_app.command("list")
def dlq_list(
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
    limit: Annotated[int, typer.Option(min=1, help="show at most N")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show each dead letter: sequence, original subject, durable, reason, error, age."""
    from cellwork.events.deadletters import list_dead_letters

    letters = _run_dlq(
        _dlq_url(cell, file, state_dir, nats_url), lambda js: list_dead_letters(js, limit=limit)
    )
    now = time.time()
    if as_json:
        print(json.dumps([letter.as_json(now) for letter in letters], indent=2))
        return
    if not letters:
        console.print("no dead letters")
        return
    table = Table(title="dead letters")
    for column in ("seq", "subject", "durable", "reason", "deliveries", "age", "error"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            str(letter.seq),
            escape(letter.subject),
            escape(letter.durable),
            letter.reason,
            str(letter.deliveries),
            _age(letter.age(now)),
            escape(letter.error),
        )
    console.print(table)


def _chosen(seqs: list[int] | None, every: bool) -> list[int]:
    if bool(seqs) == every:
        raise _fail("name dead letters by SEQ, or pass --all (not both)", 2)
    return seqs or []


async def _letters(js: JetStreamContext, seqs: list[int]) -> list[DeadLetter]:
    """The dead letters named (all of them now when none is): every one is looked up
    before any is touched, so an unknown sequence changes nothing."""
    from cellwork.events.deadletters import get_dead_letter, list_dead_letters

    if not seqs:
        return await list_dead_letters(js, limit=1_000_000)
    return [await get_dead_letter(js, seq) for seq in dict.fromkeys(seqs)]


@dlq_app.command("replay")
def dlq_replay(
    seqs: Seqs = None,
    every: AllOfThem = False,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
) -> None:
    """Publish dead letters again to their original subjects (every durable on the subject
    sees them again), then remove them from the dead-letter stream."""
    from cellwork.events.deadletters import replay

    chosen = _chosen(seqs, every)

    async def action(js: JetStreamContext) -> list[int]:
        return await replay(js, await _letters(js, chosen))

    done = _run_dlq(_dlq_url(cell, file, state_dir, nats_url), action)
    console.print(f"replayed {len(done)} dead letters" + (f": {_seq_list(done)}" if done else ""))


@dlq_app.command("drop")
def dlq_drop(
    seqs: Seqs = None,
    every: AllOfThem = False,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
) -> None:
    """Remove dead letters from the dead-letter stream for good."""
    from cellwork.events.deadletters import drop

    chosen = _chosen(seqs, every)

    async def action(js: JetStreamContext) -> list[int]:
        return await drop(js, await _letters(js, chosen))

    done = _run_dlq(_dlq_url(cell, file, state_dir, nats_url), action)
    console.print(f"dropped {len(done)} dead letters" + (f": {_seq_list(done)}" if done else ""))


def _seq_list(seqs: list[int]) -> str:
    return ", ".join(str(seq) for seq in seqs)


def main() -> None:
    """Entry point of the ``cellwork`` script."""
    app(prog_name="cellwork")


if __name__ == "__main__":
    main()
    sys.exit(0)
