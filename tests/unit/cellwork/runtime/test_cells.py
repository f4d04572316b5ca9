"""Registered cells: found by name through the cellwork.cells entry points, read from the
package's own cell.yaml, and every way of not finding one is a message."""

import importlib.metadata
import uuid
from pathlib import Path

import pytest

from cellwork.runtime.cellfile import CellFileError
from cellwork.runtime.cells import (
    ENTRY_POINT_GROUP,
    CellNotFound,
    RegisteredCell,
    find_cell,
    registered_cells,
    resolve_cell,
)

ECHO_CELL = "name: echoes\nservices:\n  echo: {module: cellwork.testing.echo}\n"


def make_package(root: Path, cell_text: str | None = ECHO_CELL, init: str = "") -> str:
    """A package on ``root`` (which the test puts on sys.path) with ``cell_text`` as its
    cell.yaml; a fresh name each time, so no earlier import is reused."""
    name = f"cells_{uuid.uuid4().hex[:8]}"
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text(init)
    if cell_text is not None:
        (package / "cell.yaml").write_text(cell_text)
    return name


def test_learnfeed_is_registered_and_its_cell_file_is_read_as_package_data():
    (cell,) = [c for c in registered_cells() if c.name == "learnfeed"]
    assert cell.package == "learnfeed" and cell.distribution == "cellwork"
    spec = cell.load()
    assert spec.name == "learnfeed"
    assert {"gateway", "push", "feed"} <= set(spec.services)


def test_a_registered_cell_is_read_from_its_packages_cell_yaml(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    package = make_package(tmp_path)
    entry = importlib.metadata.EntryPoint("echoes", package, ENTRY_POINT_GROUP)
    (cell,) = registered_cells([entry])
    assert cell == RegisteredCell("echoes", package, "")
    assert cell.load().services["echo"].module == "cellwork.testing.echo"


def test_without_a_name_the_only_registered_cell_is_found():
    only = RegisteredCell("solo", "solo_pkg")
    assert find_cell(None, [only]) is only


def test_without_a_name_several_registered_cells_are_named_in_the_error():
    cells = [RegisteredCell("b", "b"), RegisteredCell("a", "a")]
    with pytest.raises(CellNotFound, match=r"2 cells are registered \(a, b\): name one"):
        find_cell(None, cells)


def test_without_a_name_and_none_registered_the_error_points_at_a_cell_file():
    with pytest.raises(CellNotFound, match=r"no cell is registered.*-f CELL\.yaml"):
        find_cell(None, [])


def test_an_unknown_name_is_an_error_naming_the_registered_cells():
    with pytest.raises(CellNotFound, match=r"no cell named 'nope' \(registered: a, b\)"):
        find_cell("nope", [RegisteredCell("a", "a"), RegisteredCell("b", "b")])
    with pytest.raises(CellNotFound, match="none is registered"):
        find_cell("nope", [])


def test_a_name_registered_by_two_distributions_is_an_error_naming_both():
    cells = [RegisteredCell("x", "one", "dist-one"), RegisteredCell("x", "two", "dist-two")]
    with pytest.raises(CellNotFound, match="registered twice, by dist-one and dist-two"):
        find_cell("x", cells)


def test_a_package_without_a_cell_file_says_it_is_not_package_data(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    package = make_package(tmp_path, cell_text=None)
    with pytest.raises(CellFileError, match=f"package '{package}' has no cell.yaml"):
        RegisteredCell("x", package, "dist").load()


def test_a_package_that_fails_to_import_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    package = make_package(tmp_path, init="raise RuntimeError('broken on purpose')\n")
    with pytest.raises(CellFileError, match=r"cannot import .*RuntimeError: broken on purpose"):
        RegisteredCell("x", package).load()
    with pytest.raises(CellFileError, match="cannot import package 'no_such_pkg_here'"):
        RegisteredCell("x", "no_such_pkg_here").load()


def test_an_entry_point_naming_an_object_is_refused_with_the_rule():
    with pytest.raises(CellFileError, match=r"names a package holding cell\.yaml, not an object"):
        RegisteredCell("x", "pkg:cell", "dist").load()


def test_an_invalid_registered_cell_file_is_named_by_its_package_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    package = make_package(tmp_path, cell_text="name: bad\nservices: []\n")
    with pytest.raises(CellFileError, match=f"cell file {package}/cell.yaml is invalid"):
        RegisteredCell("x", package).load()


def test_resolve_cell_reads_a_file_and_refuses_a_name_with_it(tmp_path):
    path = tmp_path / "cell.yaml"
    path.write_text(ECHO_CELL)
    assert resolve_cell(file=path).name == "echoes"
    with pytest.raises(CellFileError, match="not both"):
        resolve_cell("learnfeed", path)
    assert resolve_cell("learnfeed").name == "learnfeed"
