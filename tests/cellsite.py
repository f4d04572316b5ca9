"""A distribution that registers a cell, written into a directory the test puts on the
path (``sys.path`` or ``PYTHONPATH``): what ``pip install`` of an application leaves."""

from __future__ import annotations

import uuid
from pathlib import Path

ECHO_CELL = "name: {name}\nservices:\n  echo: {{module: cellwork.testing.echo}}\n"


def register_cell(site: Path, name: str, cell_yaml: str | None = None) -> str:
    """Write a package holding ``cell_yaml`` (default: one echo instance, cell ``name``)
    and a dist-info registering it as ``name`` in ``cellwork.cells``; returns the package."""
    package = f"cells_{uuid.uuid4().hex[:8]}"
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text("")
    (site / package / "cell.yaml").write_text(cell_yaml or ECHO_CELL.format(name=name))
    info = site / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[cellwork.cells]\n{name} = {package}\n")
    return package
