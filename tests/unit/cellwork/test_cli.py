"""The CLI turns bad input into a message and an exit code, never a traceback."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cellwork.cli import app
from tests.cellsite import register_cell


def test_up_with_a_cell_env_that_gives_bad_settings_says_why_and_exits_2(tmp_path: Path):
    cell = tmp_path / "cell.yaml"
    cell.write_text("name: t\nenv: {CELLWORK_REGISTRY_TTL: soon}\nservices:\n  echo: {module: m}\n")
    result = CliRunner().invoke(app, ["up", "-f", str(cell)])
    assert result.exit_code == 2
    assert "registry_ttl" in result.output
    assert "Traceback" not in result.output


def test_up_with_an_unknown_cell_names_the_registered_ones_and_exits_2():
    result = CliRunner().invoke(app, ["up", "no-such-cell"])
    assert result.exit_code == 2
    assert "no cell named 'no-such-cell'" in result.output and "learnfeed" in result.output
    assert "Traceback" not in result.output


def test_up_with_a_name_and_a_cell_file_exits_2(tmp_path: Path):
    result = CliRunner().invoke(app, ["up", "learnfeed", "-f", str(tmp_path / "cell.yaml")])
    assert result.exit_code == 2 and "not both" in result.output


def test_up_without_a_name_lists_the_registered_cells_when_there_are_several(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    register_cell(tmp_path, "echoes")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(app, ["up"])
    assert result.exit_code == 2
    assert "2 cells are registered (echoes, learnfeed): name one" in result.output


def test_up_says_so_when_it_cannot_create_the_state_directory(tmp_path: Path):
    cell = tmp_path / "cell.yaml"
    cell.write_text("name: t\nservices:\n  echo: {module: m}\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["up", "-f", str(cell), "--state-dir", str(blocker / "s")])
    assert result.exit_code == 2
    assert "cannot create the state directory" in result.output
    assert "Traceback" not in result.output


def test_status_finds_the_only_registered_cell_under_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1
    assert "no running cell" in result.output
    assert str(tmp_path / ".cellwork" / "learnfeed" / "cell.json") in result.output


def test_status_and_scale_of_an_unknown_cell_exit_2():
    status = CliRunner().invoke(app, ["status", "no-such-cell"])
    assert status.exit_code == 2 and "no cell named 'no-such-cell'" in status.output
    scale = CliRunner().invoke(app, ["scale", "feed", "2", "--cell", "no-such-cell"])
    assert scale.exit_code == 2 and "no cell named 'no-such-cell'" in scale.output


def test_chaos_without_a_running_cell_says_so_and_exits_1(tmp_path: Path):
    for args in (["kill", "echo"], ["pause", "echo", "--for", "1"], ["nats", "restart"]):
        result = CliRunner().invoke(app, ["chaos", *args, "--state-dir", str(tmp_path)])
        assert result.exit_code == 1, args
        assert "no running cell" in result.output and "Traceback" not in result.output


def test_chaos_with_a_bad_duration_is_a_usage_error(tmp_path: Path):
    pause = CliRunner().invoke(app, ["chaos", "pause", "echo", "--state-dir", str(tmp_path)])
    assert pause.exit_code == 2 and "--for" in pause.output
    down = CliRunner().invoke(app, ["chaos", "nats", "restart", "--down", "-1"])
    assert down.exit_code == 2


def test_status_of_a_cell_whose_supervisor_died_says_it_is_not_running(tmp_path: Path):
    (tmp_path / "cell.json").write_text(
        '{"name": "t", "nats_url": "nats://127.0.0.1:1", "supervisor_pid": 1,'
        f' "state_dir": "{tmp_path}", "control_socket": "{tmp_path / "control.sock"}"}}'
    )
    result = CliRunner().invoke(app, ["status", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1 and "cell 't' is not running" in result.output
