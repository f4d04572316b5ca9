"""What the ``cellwork`` commands share: consoles, how a command names a cell, and how
it fails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from cellwork.config.settings import ServiceSettings
from cellwork.errors import CellworkError
from cellwork.runtime.cellfile import CellFileError
from cellwork.runtime.cells import resolve_cell
from cellwork.runtime.control import CellState

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

T = TypeVar("T")

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


def fail(message: str, code: int = 1) -> typer.Exit:
    # Not wrapped at the terminal's width: paths and commands stay whole to copy.
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def find_cell(name: str | None, file: Path | None, state_dir: Path | None) -> CellState:
    """The running cell's published state: from ``--state-dir``, else from the state
    directory of the cell NAME or -f FILE (or the only registered one) under this one."""
    if state_dir is None:
        try:
            state_dir = resolve_cell(name, file).resolved_state_dir(Path.cwd())
        except CellFileError as exc:
            raise fail(f"{exc}\n(or pass --state-dir to find a running cell)", 2) from None
    try:
        return CellState.read(state_dir)
    except CellworkError as exc:
        raise fail(exc.message) from None


NatsUrl = Annotated[
    str | None,
    typer.Option(
        "--nats-url",
        help="this NATS instead of the running cell's (buckets named as CELLWORK_* says)",
    ),
]


@dataclass(frozen=True, slots=True)
class CellNats:
    """Where a command finds a cell's NATS and the buckets its instances use."""

    url: str
    config_bucket: str
    registry_bucket: str


def cell_nats(
    name: str | None, file: Path | None, state_dir: Path | None, nats_url: str | None
) -> CellNats:
    """The running cell's NATS and buckets (from its ``cell.json``), or, with
    ``--nats-url``, that NATS and the buckets ``CELLWORK_*`` name (as instances read
    them: a cell on Kubernetes has no ``cell.json`` here)."""
    if nats_url:
        settings = ServiceSettings()
        return CellNats(nats_url, settings.config_bucket, settings.registry_bucket)
    state = find_cell(name, file, state_dir)
    return CellNats(state.nats_url, state.config_bucket, state.registry_bucket)


def on_nats(where: CellNats, action: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    """Run ``action`` on a short JetStream session with the cell's NATS; exits 1 with
    the reason when NATS is unreachable or ``action`` raises a CellworkError."""
    from cellwork.events.connection import jetstream_session
    from cellwork.runtime.serve import run_forever

    async def run() -> T:
        async with jetstream_session(where.url, "cellwork-cli") as js:
            return await action(js)

    try:
        return run_forever(run())
    except CellworkError as exc:
        raise fail(exc.message) from None
