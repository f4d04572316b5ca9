"""``cellwork chaos``: break a running cell on purpose (through its supervisor), to
watch it heal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cellwork.cli_support import CellFile, CellOption, StateDir, console, fail, find_cell
from cellwork.errors import CellworkError
from cellwork.runtime.control import request
from cellwork.runtime.serve import run_forever

chaos = typer.Typer(no_args_is_help=True, help="Break a running cell on purpose, to watch it heal.")
chaos_nats = typer.Typer(no_args_is_help=True, help="Faults of the cell's embedded nats-server.")
chaos.add_typer(chaos_nats, name="nats")
Instance = Annotated[
    str | None, typer.Option("--instance", help="an instance id (default: the first running one)")
]


def _control(
    verb: str, payload: dict[str, Any], cell: str | None, file: Path | None, state_dir: Path | None
) -> Any:
    """Send one control request to the running cell; exits 1 with the reason if refused."""
    state = find_cell(cell, file, state_dir)
    try:
        return run_forever(request(state, verb, payload, timeout=15))
    except CellworkError as exc:
        raise fail(exc.message) from None


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
