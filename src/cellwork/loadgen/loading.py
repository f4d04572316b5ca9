"""``--scenario MODULE``: import a scenario module and build its scenario from its options.

As ``cellwork serve MODULE`` takes a service from ``create_service``, loadgen takes a
scenario from the module's ``create_scenario``. That function's keyword parameters
are the scenario's options (typer options), so typer parses the command line left
over from the engine's options, reports an unknown option or a bad value the way
every ``cellwork`` command does (exit code 2), and prints the scenario's ``--help``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import typer
from typer.main import get_command

from cellwork.loadgen.scenario import Scenario

FACTORY = "create_scenario"


class ScenarioLoadError(Exception):
    """The scenario module is missing or broken; the message says which and why."""


class ScenarioUsage(Exception):
    """Parsing the scenario's options ended the command: an error or ``--help`` was printed.

    ``exit_code`` is 2 for a usage error, 0 after help.
    """

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"exit code {exit_code}")
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class LoadedScenario:
    """A scenario built from the command line, with what the summary says about it."""

    module: str
    scenario: Scenario[Any]
    options: dict[str, Any]


def scenario_factory(module: str) -> Callable[..., Any]:
    """Import ``module`` and return its ``create_scenario``; ScenarioLoadError otherwise.

    The working directory is importable, as uvicorn's ``--app-dir`` default makes it,
    so a team's scenario file next to its service loads without installing it.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(f"{exc.name}.")):
            raise ScenarioLoadError(f"no scenario module named {module!r}") from None
        raise ScenarioLoadError(f"scenario module {module!r} cannot be imported: {exc}") from None
    except Exception as exc:  # the module itself is broken: say how, without a traceback
        raise ScenarioLoadError(
            f"scenario module {module!r} cannot be imported: {type(exc).__name__}: {exc}"
        ) from None
    factory = getattr(mod, FACTORY, None)
    if not callable(factory):
        raise ScenarioLoadError(f"module {module!r} has no {FACTORY}() function")
    return factory  # type: ignore[no-any-return]


def _command(module: str, factory: Callable[..., Any], built: list[LoadedScenario]) -> typer.Typer:
    """A one-command typer app whose options are ``factory``'s parameters."""

    @functools.wraps(factory)
    def build(**options: Any) -> None:
        try:
            scenario = factory(**options)
        except ValueError as exc:  # a bad option value: a usage error, like typer's own
            raise typer.BadParameter(str(exc)) from None
        except (typer.BadParameter, typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            raise ScenarioLoadError(
                f"{module}.{FACTORY}() failed: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(scenario, Scenario):
            raise ScenarioLoadError(
                f"{module}.{FACTORY}() returned {type(scenario).__name__}, not a Scenario"
            )
        built.append(LoadedScenario(module, scenario, options))

    app = typer.Typer(add_completion=False)
    app.command(name=module)(build)
    return app


def load_scenario(
    module: str, args: Sequence[str], reserved: Collection[str] = ()
) -> LoadedScenario:
    """Build the scenario of ``module`` from its command-line ``args``.

    ``reserved`` are the engine's option names, which a scenario may not declare
    (the engine would take their values). Raises ScenarioLoadError for a missing or
    broken module, ScenarioUsage after typer printed a usage error or the help.
    """
    factory = scenario_factory(module)
    built: list[LoadedScenario] = []
    try:
        command = get_command(_command(module, factory, built))
    except Exception as exc:  # typer cannot make options of the signature
        raise ScenarioLoadError(
            f"{module}.{FACTORY}() does not declare its options as typer can read them: {exc}"
        ) from None
    clash = sorted({opt for param in command.params for opt in param.opts} & set(reserved))
    if clash:
        raise ScenarioLoadError(
            f"{module}.{FACTORY}() declares {', '.join(clash)}, which loadgen itself takes"
        )
    code = 1
    try:
        command.main(
            list(args), prog_name=f"cellwork loadgen --scenario {module}", standalone_mode=True
        )
    except SystemExit as exc:  # standalone mode always ends in SystemExit, 0 when it went well
        code = exc.code if isinstance(exc.code, int) else 1
    if built:
        return built[0]
    raise ScenarioUsage(code)


def print_scenario_help(module: str) -> None:
    """Print the options of the scenario in ``module``; ScenarioLoadError when it cannot load."""
    with contextlib.suppress(ScenarioUsage):  # help printed: that was the point
        load_scenario(module, ["--help"])
