"""The suite's skip policy (tests/conftest.py): every skip is listed with its reason, and
in CI a skip whose reason is not allowed fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SkipPolicy, in_ci

REPO = Path(__file__).resolve().parents[2]

SKIPPING = """
import pytest

def test_that_runs():
    pass

def test_that_needs_a_frobnicator():
    pytest.skip("no frobnicator on this machine")
"""


def run_pytest(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    """pytest on a one-file suite, with the policy of tests/conftest.py as a plugin."""
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    )
    (tmp_path / "test_sample.py").write_text(SKIPPING)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["PYTHONPATH"] = str(REPO)
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_outside_ci_a_skip_passes_and_is_listed_with_its_reason(tmp_path: Path) -> None:
    ran = run_pytest(tmp_path, ci=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "skipped, and why" in ran.stdout
    assert "test_sample.py::test_that_needs_a_frobnicator: no frobnicator" in ran.stdout


def test_in_ci_a_skip_not_allowed_fails_the_run_naming_the_test(tmp_path: Path) -> None:
    ran = run_pytest(tmp_path, ci=True)
    assert ran.returncode == pytest.ExitCode.TESTS_FAILED, ran.stdout + ran.stderr
    assert "skipped in CI, where every test must run" in ran.stdout
    assert "test_sample.py::test_that_needs_a_frobnicator: no frobnicator" in ran.stdout
    assert "1 passed, 1 skipped" in ran.stdout


def skipped(reason: str) -> pytest.TestReport:
    return pytest.TestReport(
        "test_x.py::test_y", ("test_x.py", 1, "test_y"), {}, "skipped", ("x", 1, reason), "call"
    )


def test_in_ci_a_reason_on_the_allowlist_is_listed_but_does_not_fail_the_run() -> None:
    policy = SkipPolicy(ci=True, allowed={"no GPU": "CI machines have none"})
    policy.note(skipped("Skipped: no GPU"))
    policy.note(skipped("Skipped: no frobnicator"))
    assert [(s.reason, s.refused) for s in policy.skips] == [
        ("no GPU", False),
        ("no frobnicator", True),
    ]


def test_an_expected_failure_is_no_skip() -> None:
    policy = SkipPolicy(ci=True, allowed={})
    report = skipped("known bug")
    report.wasxfail = "known bug"  # how pytest marks an xfail
    policy.note(report)
    assert policy.skips == []


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("1", True), ("TRUE", True), ("", False), ("0", False)]
)
def test_ci_is_told_by_the_ci_variable(value: str, expected: bool) -> None:
    assert in_ci({"CI": value}) is expected
    assert in_ci({}) is False
