"""Test-only faults: armed only by both environment variables, and then fatal."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cellwork.testing import faults


def test_a_fault_point_is_armed_only_with_both_variables(monkeypatch) -> None:
    monkeypatch.delenv(faults.TEST_FAULTS_ENV, raising=False)
    monkeypatch.setenv(faults.TEST_EXIT_AT_ENV, "outbox.after_commit")
    assert not faults.armed("outbox.after_commit")
    faults.fire("outbox.after_commit")  # not armed: returns
    monkeypatch.setenv(faults.TEST_FAULTS_ENV, "1")
    assert faults.armed("outbox.after_commit")
    assert not faults.armed("another.point")


@pytest.mark.parametrize("enabled", ["1", ""])
def test_an_armed_point_ends_the_process_with_its_exit_code(enabled: str) -> None:
    code = "from cellwork.testing import faults; faults.fire('p'); print('alive')"
    env = {faults.TEST_FAULTS_ENV: enabled, faults.TEST_EXIT_AT_ENV: "p", "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    if enabled:
        assert done.returncode == faults.EXIT_CODE and "alive" not in done.stdout
    else:
        assert done.returncode == 0 and "alive" in done.stdout


def test_an_arm_file_makes_the_point_fire_once_and_only_while_it_exists(tmp_path) -> None:
    arm = tmp_path / "arm"
    code = "from cellwork.testing import faults; faults.fire('p'); print('alive')"
    env = {
        faults.TEST_FAULTS_ENV: "1",
        faults.TEST_EXIT_AT_ENV: "p",
        faults.TEST_ARM_FILE_ENV: str(arm),
        "PATH": "",
    }

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )

    assert run().returncode == 0  # not armed yet
    arm.touch()
    assert run().returncode == faults.EXIT_CODE
    assert not arm.exists()
    assert run().returncode == 0  # it fired once
