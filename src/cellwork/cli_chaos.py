"""``cellwork chaos``: break a running cell on purpose, to watch it heal.

``kill``, ``pause`` and ``nats restart`` act on processes, through the supervisor's
control socket. ``delay``, ``fail`` and ``clear`` set the live settings group
``faults`` of a service (``cellwork.rpc.faults``) in the cell's config bucket, as
``cellwork config set`` does: every instance (or the one named) applies them at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cellwork.cli_support import (
    CellFile,
    CellOption,
    NatsUrl,
    StateDir,
    cell_nats,
    console,
    fail,
    find_cell,
    on_nats,
)
from cellwork.config.admin import clear_group, write_settings
from cellwork.errors import CellworkError
from cellwork.runtime.control import request
from cellwork.runtime.serve import run_forever

chaos = typer.Typer(no_args_is_help=True, help="Break a running cell on purpose, to watch it heal.")
chaos_nats = typer.Typer(no_args_is_help=True, help="Faults of the cell's embedded nats-server.")
chaos.add_typer(chaos_nats, name="nats")
Instance = Annotated[
    str | None, typer.Option("--instance", help="an instance id (default: the first running one)")
]
FaultInstance = Annotated[
    str | None, typer.Option("--instance", help="this instance only (default: every instance)")
]
Service = Annotated[str, typer.Argument(help="service name in the cell")]
FAULTS = "faults"  # the live settings group of cellwork.rpc.faults


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


def _set_faults(
    service: str,
    values: dict[str, Any],
    instance: str | None,
    where: tuple[str | None, Path | None, Path | None, str | None],
) -> None:
    nats = cell_nats(*where)
    on_nats(
        nats,
        lambda js: write_settings(
            js,
            nats.config_bucket,
            nats.registry_bucket,
            service,
            FAULTS,
            values,
            instance=instance,
        ),
    )


@chaos.command("delay")
def chaos_delay(
    service: Service,
    ms: Annotated[float, typer.Argument(metavar="MS", help="milliseconds per call", min=0)],
    instance: FaultInstance = None,
    cpu: Annotated[
        bool,
        typer.Option("--cpu", help="burn MS of CPU per call instead of sleeping (less capacity)"),
    ] = False,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
) -> None:
    """Add MS milliseconds to every call SERVICE (or one instance) answers, until cleared."""
    # The mode first: an instance never burns CPU for a delay meant as a sleep.
    values = {"cpu": cpu, "delay_ms": ms}
    _set_faults(service, values, instance, (cell, file, state_dir, nats_url))
    how = "burning CPU" if cpu else "sleeping"
    console.print(f"{instance or service}: every call delayed {ms:g} ms ({how})", soft_wrap=True)


@chaos.command("fail")
def chaos_fail(
    service: Service,
    rate: Annotated[float, typer.Argument(metavar="RATE", help="share of calls, 0 to 1")],
    instance: FaultInstance = None,
    code: Annotated[
        str, typer.Option("--code", help="INTERNAL or UNAVAILABLE", case_sensitive=False)
    ] = "INTERNAL",
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
) -> None:
    """Fail RATE of the calls SERVICE (or one instance) answers with --code, until cleared."""
    values = {"fail_code": code.upper(), "fail_rate": rate}
    _set_faults(service, values, instance, (cell, file, state_dir, nats_url))
    console.print(
        f"{instance or service}: {rate:.0%} of calls fail with {code.upper()}", soft_wrap=True
    )


@chaos.command("clear")
def chaos_clear(
    service: Service,
    instance: Annotated[
        str | None,
        typer.Option("--instance", help="this instance's faults only (default: all of them)"),
    ] = None,
    cell: CellOption = None,
    file: CellFile = None,
    state_dir: StateDir = None,
    nats_url: NatsUrl = None,
) -> None:
    """Remove the delays and failures set on SERVICE: service-wide and on every instance
    (or only on --instance)."""
    nats = cell_nats(cell, file, state_dir, nats_url)
    cleared = on_nats(
        nats, lambda js: clear_group(js, nats.config_bucket, service, FAULTS, instance=instance)
    )
    if not cleared:
        console.print(f"{instance or service}: no faults were set", soft_wrap=True)
        return
    console.print(f"{instance or service}: faults cleared ({', '.join(cleared)})", soft_wrap=True)
