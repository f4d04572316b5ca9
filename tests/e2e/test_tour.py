"""README's five-minute tour, run in order as a person types it into a terminal, against
a real learnfeed cell started with `cellwork up learnfeed --demo`.

The tour is the ```sh block after README's ``<!-- tour -->`` marker. In it:

- ``COMMAND   # → TEXT``: the command prints TEXT. The cell is eventually consistent
  (a killed instance comes back within seconds), so a command whose output differs is
  run again until it prints TEXT, within a generous bound;
- ``# → TEXT`` on a line of its own: the job last started in the background prints the
  line TEXT, before the tour goes on;
- every command exits 0; ``COMMAND &`` starts a background job.

The shell is bash on a pseudo-terminal with job control, as in a terminal window: a
background job that reads the terminal is stopped by the kernel (SIGTTIN) there as it
would be for a person. Each command's output goes to a file the test reads. The test
only rewrites the gateway's and push's ports (8080, 8081) to free ones.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from cellwork.testing import CellProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- tour -->"
ARROW = "# →"
BOUND = 60.0  # seconds a step may take to print what the tour says: a loaded 2-core machine


@dataclass(frozen=True)
class Step:
    """One command of the tour (``expected``: what it prints), or with ``command`` None,
    a line the background job must print."""

    command: str | None
    expected: str | None

    @property
    def background(self) -> bool:
        return self.command is not None and re.search(r"[^&]&$", self.command) is not None


def tour_steps(readme: str) -> list[Step]:
    """The steps of the ```sh block after the tour's marker, in order."""
    after = readme.split(MARKER, 1)[1]
    match = re.match(r"\s*```sh\n(.*?)\n```", after, re.DOTALL)
    assert match, f"README: no ```sh block right after {MARKER}"
    lines = re.sub(r"\\\n\s*", "", match.group(1)).splitlines()  # join continued lines
    steps = []
    for line in (raw.strip() for raw in lines):
        if line.startswith(ARROW):
            steps.append(Step(None, line.removeprefix(ARROW).strip()))
        elif line and not line.startswith("#"):
            command, _, expected = line.partition(ARROW)
            steps.append(Step(command.strip(), expected.strip() or None))
    return steps


def eventually(what: str, check: Callable[[], bool], timeout: float = BOUND) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.1)


class Terminal:
    """bash reading commands from a pseudo-terminal it controls, with job control on."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.master, slave = pty.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO  # what the test types need not come back
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        self.shell = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=(cwd / "shell.err").open("wb"),
            cwd=cwd,
            env=env,
            text=True,
            start_new_session=True,
            # the terminal becomes the new session's controlling terminal, as a login's does
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.jobs: list[int] = []
        self.type("set -m")  # job control: background jobs get their own process group

    def type(self, line: str) -> list[str]:
        """Type ``line``; wait for it to finish; the shell's report of it: ``$?`` and, once
        a job was started in the background, ``$!``."""
        # The report is typed on the same line: nothing waits in the terminal's input
        # while the command runs, for it to read by mistake.
        then = " " if line.endswith("&") else "; "
        os.write(self.master, f"{line}{then}printf '__done__ %s %s\\n' $? $!\n".encode())
        assert self.shell.stdout is not None
        deadline = time.monotonic() + BOUND
        while True:  # a line per command; readline returns once bash has run it
            report = self.shell.stdout.readline()
            assert report, f"the shell exited: {(self.cwd / 'shell.err').read_text()}"
            if report.startswith("__done__"):
                return report.split()[1:]
            assert time.monotonic() < deadline, f"no end to {line!r}"

    def run(self, command: str, index: int) -> tuple[int, str, str]:
        """Run one foreground command; exit code, stdout and stderr."""
        out, err = self.cwd / f"step{index}.out", self.cwd / f"step{index}.err"
        report = self.type(f"{{ {command}\n}} >{out} 2>{err}")
        return int(report[0]), out.read_text(), err.read_text()

    def start(self, command: str, index: int) -> Path:
        """Start a background job; the file its output goes to."""
        out = self.cwd / f"job{index}.out"
        code, pid = self.type(f"{command.removesuffix('&').rstrip()} >{out} 2>&1 &")
        assert code == "0" and pid.isdigit(), (code, pid)
        self.jobs.append(int(pid))
        return out

    def close(self) -> None:
        for pid in self.jobs:  # whatever the tour left running
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        os.close(self.master)  # end of input: bash exits
        self.shell.wait(10)


def running(pid: int) -> bool:
    """Alive and not merely waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def printed(output: Path, line: str, job: int) -> bool:
    """Whether the background ``job`` has printed ``line`` to ``output``; fails at once if
    the job was stopped (it read the terminal, as a shell's background job may not)."""
    try:
        state = psutil.Process(job).status()
    except psutil.NoSuchProcess:
        state = None
    # The job's shell opens the file after `$!` is known: until then it has printed nothing.
    text = output.read_text() if output.exists() else ""
    assert state != psutil.STATUS_STOPPED, f"the background job was stopped by the terminal: {text}"
    return line in text.splitlines()


@pytest.fixture
def tools() -> None:
    if missing := [tool for tool in ("jq", "curl", "bash") if shutil.which(tool) is None]:
        pytest.skip(f"the tour uses {', '.join(missing)}, not installed here (apt-get install)")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where the tour is typed: .venv/bin/ is this test's own environment, as in a checkout."""
    (tmp_path / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    return tmp_path


@pytest.fixture
def cell(workdir: Path) -> Iterator[dict[str, int]]:
    ports = {"8080": free_port(), "8081": free_port()}
    running = CellProcess(
        "learnfeed",
        workdir,
        env={"CELLWORK_GATEWAY_PORT": str(ports["8080"]), "CELLWORK_PUSH_PORT": str(ports["8081"])},
        ready_urls=(f"http://127.0.0.1:{ports['8080']}/readyz",),
    )
    with running.start(timeout=180):
        yield ports
    assert running.process is not None and running.process.returncode == 0, running.log_tail()


def test_the_tour_covers_the_feed_flow_and_runs_only_the_stream_in_the_background() -> None:
    steps = tour_steps(README.read_text())
    commands = " ".join(step.command or "" for step in steps)
    expected = [step.expected for step in steps if step.expected]
    assert "/v1/auth/signup" in commands and "cellwork stream" in commands
    assert "[0,true]" in expected and '{"type":"feed.ready","version":1}' in expected
    assert "/follow" in commands and '"kind":"like"' in commands
    assert "[]" in expected and "kill -9" in commands
    assert '["SERVING",1]' in expected
    assert [step.command for step in steps if step.background] == [
        step.command for step in steps if step.command and "cellwork stream" in step.command
    ]


def test_the_readme_tour_runs_in_order_against_a_fresh_cell(
    tools: None, workdir: Path, cell: dict[str, int]
) -> None:
    steps = tour_steps(README.read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("CELLWORK_TOKEN", "TOKEN")}
    terminal = Terminal(workdir, env)
    job_output: Path | None = None
    try:
        for index, step in enumerate(steps):
            if step.command is None:  # a line the background job prints
                assert job_output is not None, f"{step.expected!r}: no background job yet"
                eventually(
                    f"the background job printing {step.expected}",
                    lambda output=job_output, line=step.expected: printed(
                        output, line, terminal.jobs[-1]
                    ),
                )
                continue
            command = step.command
            for port, free in cell.items():
                command = command.replace(f"localhost:{port}", f"localhost:{free}")
            if step.background:
                job_output = terminal.start(command, index)
                continue
            deadline = time.monotonic() + BOUND
            while True:
                code, out, err = terminal.run(command, index)
                assert code == 0, f"{step.command!r} exited {code}: {err}{out}"
                if step.expected is None or out.strip() == step.expected:
                    break
                assert time.monotonic() < deadline, (
                    f"{step.command!r} printed {out.strip()!r}, not {step.expected!r}"
                )
                time.sleep(0.5)
        for job in terminal.jobs:  # the tour stops what it started in the background
            eventually(f"background job {job} ending", lambda job=job: not running(job), 30)
    finally:
        terminal.close()
