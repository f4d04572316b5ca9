from pathlib import Path

import pytest

from cellwork.runtime.cellfile import CellFileError, load_cell

REPO = Path(__file__).resolve().parents[4]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cell.yaml"
    path.write_text(text)
    return path


def test_the_learnfeed_cell_file_is_valid():
    spec = load_cell(REPO / "src/learnfeed/cell.yaml")
    assert spec.name == "learnfeed"
    assert spec.services and all(s.replicas >= 1 for s in spec.services.values())


def test_cell_file_values_and_defaults(tmp_path):
    spec = load_cell(
        write(
            tmp_path,
            "name: demo\nservices:\n  echo:\n    module: m\n    replicas: 3\n"
            "    env: {A: 1}\nsupervisor:\n  hang_timeout: 2\n",
        )
    )
    assert spec.services["echo"].replicas == 3
    assert spec.services["echo"].env == {"A": "1"}
    assert spec.supervisor.hang_timeout == 2
    assert spec.supervisor.stop_grace == 10
    assert spec.resolved_state_dir(tmp_path) == tmp_path / ".cellwork" / "demo"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("services: [", "not valid YAML"),
        ("- a list", "must be a mapping"),
        ("name: x\n", "services"),
        ("services:\n  e:\n    module: m\n    replicas: -1\n", "replicas"),
        ("services:\n  e:\n    module: m\n    colour: red\n", "colour"),
        ("name: 'bad name'\nservices: {}\n", "name"),
        (
            "supervisor:\n  restart_backoff_base: 5\n  restart_backoff_max: 1\nservices: {}\n",
            "restart_backoff_max must be at least restart_backoff_base",
        ),
    ],
)
def test_bad_cell_files_get_a_readable_error(tmp_path, text, fragment):
    with pytest.raises(CellFileError, match=fragment):
        load_cell(write(tmp_path, text))


def test_missing_cell_file_is_a_clear_error(tmp_path):
    with pytest.raises(CellFileError, match="cannot read"):
        load_cell(tmp_path / "nope.yaml")
