"""What the ``cellwork`` commands share: consoles, how a command names a cell, and how
it fails."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cellwork.errors import CellworkError
from cellwork.runtime.cellfile import CellFileError
from cellwork.runtime.cells import resolve_cell
from cellwork.runtime.control import CellState

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
