"""Cells that applications register, found by name wherever the package is installed.

An application ships its cell file as package data, ``cell.yaml`` in a package of
its own, and names that package in the ``cellwork.cells`` entry-point group::

    [project.entry-points."cellwork.cells"]
    learnfeed = "learnfeed"            # the cell file is learnfeed/cell.yaml

``cellwork up learnfeed`` reads it through ``importlib.resources``, so the same
command works from any directory, from a wheel and inside an image: no path into
a source tree is involved. The entry point names a package rather than an object
so that finding a cell imports nothing but that package's ``__init__``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cellwork.runtime.cellfile import CellFileError, CellSpec, load_cell, parse_cell

ENTRY_POINT_GROUP = "cellwork.cells"
CELL_FILE = "cell.yaml"


class CellNotFound(CellFileError):
    """No registered cell answers to the name given (or none was given and not exactly
    one is registered)."""


@dataclass(frozen=True, slots=True)
class RegisteredCell:
    """One entry of the ``cellwork.cells`` group: a name and the package holding its file."""

    name: str
    package: str
    distribution: str = ""  # who registered it, for messages; empty when unknown

    @property
    def origin(self) -> str:
        """Where the cell file comes from, as messages name it: ``learnfeed/cell.yaml``."""
        return f"{self.package.replace('.', '/')}/{CELL_FILE}"

    def load(self) -> CellSpec:
        """Read and validate the cell file; raises CellFileError with a readable message.

        Imports ``package`` (its ``__init__`` only) to find its files."""
        by = f" (registered by {self.distribution})" if self.distribution else ""
        if ":" in self.package:
            raise CellFileError(
                f"cell {self.name!r}{by} names {self.package!r}: an entry point in "
                f"{ENTRY_POINT_GROUP!r} names a package holding {CELL_FILE}, not an object"
            )
        try:
            text = importlib.resources.files(self.package).joinpath(CELL_FILE).read_text()
        except FileNotFoundError:
            raise CellFileError(
                f"cell {self.name!r}{by}: package {self.package!r} has no {CELL_FILE} "
                "(is it listed as package data?)"
            ) from None
        except Exception as exc:  # an application's package that fails to import
            raise CellFileError(
                f"cell {self.name!r}{by}: cannot import package {self.package!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return parse_cell(text, self.origin)


def registered_cells(
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
) -> tuple[RegisteredCell, ...]:
    """Every registered cell, by name; ``entry_points`` defaults to the installed ones."""
    found = (
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if entry_points is None
        else entry_points
    )
    cells = (
        RegisteredCell(ep.name, ep.value.strip(), ep.dist.name if ep.dist is not None else "")
        for ep in found
    )
    return tuple(sorted(cells, key=lambda cell: (cell.name, cell.distribution)))


def find_cell(name: str | None, cells: Sequence[RegisteredCell] | None = None) -> RegisteredCell:
    """The registered cell called ``name``, or with ``name=None`` the only one registered.

    Raises CellNotFound naming the cells there are when that is not exactly one."""
    cells = registered_cells() if cells is None else cells
    names = sorted({cell.name for cell in cells})
    if name is None:
        if len(names) == 1:
            (only,) = names
            return find_cell(only, cells)
        if not names:
            raise CellNotFound(
                f"no cell is registered (entry points in group {ENTRY_POINT_GROUP!r}): "
                "pass a cell file with -f CELL.yaml"
            )
        raise CellNotFound(
            f"{len(names)} cells are registered ({', '.join(names)}): name one of them"
        )
    matches = [cell for cell in cells if cell.name == name]
    if not matches:
        known = f"registered: {', '.join(names)}" if names else "none is registered"
        raise CellNotFound(f"no cell named {name!r} ({known}); or pass -f CELL.yaml")
    if len(matches) > 1:
        by = " and ".join(cell.distribution or cell.package for cell in matches)
        raise CellNotFound(f"cell {name!r} is registered twice, by {by}: pass -f CELL.yaml")
    return matches[0]


def resolve_cell(name: str | None = None, file: Path | None = None) -> CellSpec:
    """The cell a command means: the file ``-f`` names, the registered cell ``name``, or
    the only registered cell. Raises CellFileError (CellNotFound) saying why not."""
    if file is not None:
        if name is not None:
            raise CellFileError(f"name a cell ({name!r}) or pass -f {file}, not both")
        return load_cell(file)
    return find_cell(name).load()
