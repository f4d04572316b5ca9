"""What every test run shares: cellwork's fixtures, and the skip policy.

A skipped test is a test that did not run, so no skip passes in silence: every run
ends with a list of the tests it skipped and why. In CI (``CI=true``, as ``.ci/run``
sets) a skip whose reason is not on ``SKIPS_ALLOWED_IN_CI`` fails the run, naming the
tests: CI has every tool the suite uses (``make test`` installs them first, see
``tests/tools.sh``), so a skip there means something is broken, not missing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

pytest_plugins = ["cellwork.testing.pytest_plugin"]

# Skip reasons CI accepts, exactly as the test gives them, each with why CI cannot run
# it. Empty: CI installs everything the suite uses, so every test runs there.
SKIPS_ALLOWED_IN_CI: dict[str, str] = {}


def in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this run is CI's (``CI`` set to true, as CI services and ``.ci/run`` do)."""
    return environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Skip:
    test: str
    reason: str
    refused: bool  # in CI and not on the allowlist: it fails the run


@dataclass(eq=False)  # registered as a plugin: pluggy keys plugins by identity
class SkipPolicy:
    """Notes every skip of the run; at the end lists them, and fails a CI run for those
    whose reason is not allowed."""

    ci: bool
    allowed: dict[str, str]
    skips: list[Skip] = field(default_factory=list)

    def note(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):  # an xfail is no skip
            return
        longrepr = report.longrepr
        message = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = message.removeprefix("Skipped: ")
        self.skips.append(Skip(report.nodeid, reason, self.ci and reason not in self.allowed))

    @property
    def refused(self) -> list[Skip]:
        return [skip for skip in self.skips if skip.refused]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.note(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self.note(report)  # a whole module skipped (pytest.importorskip, allow_module_level)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # What the run exits with is read from the session after this hook.
        if self.refused and session.exitstatus in (
            pytest.ExitCode.OK,
            pytest.ExitCode.NO_TESTS_COLLECTED,
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        allowed = [skip for skip in self.skips if not skip.refused]
        if allowed:
            terminalreporter.section("skipped, and why", yellow=True)
            for skip in allowed:
                terminalreporter.line(f"{skip.test}: {skip.reason}")
        if self.refused:
            terminalreporter.section("skipped in CI, where every test must run", red=True)
            for skip in self.refused:
                terminalreporter.line(f"{skip.test}: {skip.reason}", red=True)
            terminalreporter.line(
                "The run fails for these. Install what they need, or put the reason on "
                "SKIPS_ALLOWED_IN_CI in tests/conftest.py with why CI cannot run them."
            )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipPolicy(in_ci(), SKIPS_ALLOWED_IN_CI), "skip-policy")
