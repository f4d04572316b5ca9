"""Loading a scenario through ``cellwork loadgen``: a bad module, factory or option is a usage
error (exit 2) that says why."""

import importlib
import os
import secrets
import sys
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from cellwork.cli import app


@pytest.fixture
def scenario_dir(tmp_path, monkeypatch):
    """The working directory, where a team's scenario module sits beside its service."""
    # Not on sys.path but as the working directory: loadgen makes it importable.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    monkeypatch.chdir(tmp_path)

    def write(source: str) -> str:
        name = f"scenario_{secrets.token_hex(4)}"
        (tmp_path / f"{name}.py").write_text(source)
        importlib.invalidate_caches()
        return name

    return write


@dataclass(frozen=True)
class Ran:
    exit_code: int
    output: str  # stdout and stderr, rich's line wrapping and boxes undone


def loadgen(*args: str) -> Ran:
    result = CliRunner().invoke(app, ["loadgen", *args])
    assert "Traceback" not in result.output
    text = result.output.translate({ord(c): " " for c in "│╭╮╰╯─"})
    return Ran(result.exit_code, " ".join(text.split()))


def test_a_scenario_module_that_does_not_exist_is_a_usage_error():
    result = loadgen("--scenario", "no_such_scenario_module", "--duration", "1")
    assert result.exit_code == 2
    assert "no scenario module named 'no_such_scenario_module'" in result.output


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise RuntimeError('needs SETTINGS')\n", "RuntimeError: needs SETTINGS"),
        ("def create_scenario(:\n", "SyntaxError"),
        ("import no_such_dependency_here\n", "No module named 'no_such_dependency_here'"),
    ],
)
def test_a_scenario_module_that_cannot_be_imported_is_a_usage_error_naming_why(
    scenario_dir, source, message
):
    name = scenario_dir(source)
    result = loadgen("--scenario", name)
    assert result.exit_code == 2
    assert f"scenario module {name!r} cannot be imported" in result.output
    assert message in result.output


def test_a_module_without_create_scenario_is_a_usage_error(scenario_dir):
    name = scenario_dir("def create_service(settings):\n    return None\n")
    result = loadgen("--scenario", name)
    assert result.exit_code == 2
    assert f"module {name!r} has no create_scenario() function" in result.output


def test_a_factory_that_returns_no_scenario_is_a_usage_error(scenario_dir):
    name = scenario_dir("def create_scenario():\n    return 'a scenario, honest'\n")
    result = loadgen("--scenario", name)
    assert result.exit_code == 2
    assert "returned str, not a Scenario" in result.output


def test_a_factory_that_fails_is_a_usage_error_naming_why(scenario_dir):
    name = scenario_dir("def create_scenario():\n    raise LookupError('no such target')\n")
    result = loadgen("--scenario", name)
    assert result.exit_code == 2
    assert "create_scenario() failed: LookupError: no such target" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "cellwork.loadgen.http", "--url", "http://x", "--users", "5"], "--users"),
        (["--scenario", "learnfeed.loadgen", "--nope", "1"], "No such option: --nope"),
        (["--scenario", "learnfeed.loadgen", "stray"], "unexpected extra argument"),
    ],
)
def test_an_option_the_scenario_does_not_declare_is_a_usage_error(args, message):
    result = loadgen(*args)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "learnfeed.loadgen", "--mix", "feed=x"], "weight of 'feed' must be an"),
        (["--scenario", "learnfeed.loadgen", "--users", "0"], "--users must be at least 1"),
        (["--scenario", "learnfeed.loadgen", "--users", "many"], "Invalid value for '--users'"),
        (["--url", "ftp://example.com/x"], "--url must be an http:// or https:// URL"),
        (["--url", "http://x", "--header", "no colon"], "is not 'Name: value'"),
        (["--method", "GET"], "Missing option '--url'"),
    ],
)
def test_a_bad_scenario_option_value_is_a_usage_error(args, message):
    result = loadgen(*args)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "--rate must be a positive number"),
        (["--max-send-lag", "-1"], "--max-send-lag must be a positive number"),
        (["--max-in-flight", "0"], "--max-in-flight"),
    ],
)
def test_an_engine_option_out_of_range_is_a_usage_error(args, message):
    result = loadgen(*args, "--url", "http://127.0.0.1:9/")
    assert result.exit_code == 2
    assert message in result.output


def test_a_scenario_may_not_declare_an_option_the_engine_takes(scenario_dir):
    name = scenario_dir("def create_scenario(timeout: float = 1.0):\n    return None\n")
    result = loadgen("--scenario", name)
    assert result.exit_code == 2
    assert "declares --timeout, which loadgen itself takes" in result.output


def test_help_lists_the_engines_options_and_the_scenarios():
    result = loadgen("--scenario", "learnfeed.loadgen", "--help")
    assert result.exit_code == 0
    for option in ("--rate", "--max-in-flight", "--users", "--sockets", "--mix", "--gateway"):
        assert option in result.output


def test_a_scenario_in_the_working_directory_loads_and_runs(scenario_dir):
    name = scenario_dir(
        "from contextlib import asynccontextmanager\n"
        "from cellwork.loadgen import LoadgenError, Scenario\n"
        "class Closed(Scenario[None]):\n"
        "    @asynccontextmanager\n"
        "    async def session(self, run):\n"
        "        raise LoadgenError('the shop is closed [on Sundays]')\n"
        "        yield\n"
        "    async def perform(self, state):\n"
        "        raise AssertionError('never sent')\n"
        "def create_scenario(shop: str = 'corner') -> Closed:\n"
        "    return Closed()\n"
    )
    result = loadgen("--scenario", name, "--shop", "main street", "--duration", "1")
    assert result.exit_code == 1
    assert "the shop is closed [on Sundays]" in result.output
