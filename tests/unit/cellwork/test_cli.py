"""The CLI turns bad input into a message and an exit code, never a traceback."""

from pathlib import Path

from typer.testing import CliRunner

from cellwork.cli import app


def test_up_with_a_cell_env_that_gives_bad_settings_says_why_and_exits_2(tmp_path: Path):
    cell = tmp_path / "cell.yaml"
    cell.write_text("name: t\nenv: {CELLWORK_REGISTRY_TTL: soon}\nservices:\n  echo: {module: m}\n")
    result = CliRunner().invoke(app, ["up", "-f", str(cell)])
    assert result.exit_code == 2
    assert "registry_ttl" in result.output
    assert "Traceback" not in result.output
