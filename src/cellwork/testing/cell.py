"""Run a whole cell the way a user does (``cellwork up`` in a subprocess) for a test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from cellwork.runtime.cells import resolve_cell
from cellwork.runtime.control import CellState


class CellProcess:
    """``cellwork up`` of a cell (its spec, or a registered name) in ``workdir``; a context manager.

    ``spec`` is a cell file's content, or the name of a registered cell, which runs
    as a user runs it: ``cellwork up NAME`` in ``workdir``, its state in
    ``workdir/.cellwork/<cell>``. ``env`` is added to the environment the cell starts
    with (ports, settings). ``start()`` returns once every instance the spec asks for
    is SERVING and each of ``ready_urls`` answers 200; ``stop()`` sends SIGINT (the
    cell drains) and returns the exit code, killing it if it does not stop in time. As
    a context manager it starts the cell unless ``start()`` already did
    (``with CellProcess(...).start(t):`` runs one cell, not two).
    """

    def __init__(
        self,
        spec: dict[str, Any] | str,
        workdir: Path,
        *,
        demo: bool = True,
        ready_urls: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.name: str | None = None
        if isinstance(spec, str):  # raises CellFileError for a name nobody registered
            self.name = spec
            registered = resolve_cell(spec)
            self.spec = registered.model_dump(mode="json")
            self._state_dir = registered.resolved_state_dir(self.workdir)
        else:
            self.spec = {**spec, "state_dir": str(self.workdir / "state")}
            self._state_dir = self.workdir / "state"
        self.demo = demo
        self.ready_urls = ready_urls
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "cell.log"

    @property
    def state_dir(self) -> Path:
        return self._state_dir

    @property
    def expected(self) -> int:
        return sum(int(s.get("replicas", 1)) for s in self.spec["services"].values())

    def nats_url(self) -> str:
        return CellState.read(self.state_dir).nats_url

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def instances(self) -> list[dict[str, Any]]:
        """``cellwork status --json``'s instances ([] while the cell is not reachable)."""
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "cellwork",
                "status",
                "--json",
                "--state-dir",
                str(self.state_dir),
            ],
            capture_output=True,
            text=True,
            timeout=15,
        )
        if out.returncode != 0:
            return []
        rows: list[dict[str, Any]] = json.loads(out.stdout)["instances"]
        return rows

    def _ready(self) -> bool:
        rows = self.instances()
        if len(rows) != self.expected or any(r["status"] != "SERVING" for r in rows):
            return False
        for url in self.ready_urls:
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status != 200:
                        return False
            except (urllib.error.URLError, OSError):
                return False
        return True

    def start(self, timeout: float = 60.0) -> CellProcess:
        """Run ``cellwork up`` and wait until the cell is ready; raises if already running."""
        if self.running:
            raise RuntimeError("this cell is already running: stop() it first")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.name is not None:
            cell = [self.name]
        else:
            cell_file = self.workdir / "cell.yaml"
            cell_file.write_text(yaml.safe_dump(self.spec))
            cell = ["-f", str(cell_file)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cellwork", "up", *cell] + (["--demo"] if self.demo else []),
                cwd=self.workdir,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"the cell exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the cell was not ready in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.5)
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGINT, wait (SIGKILL after ``timeout``); the cell's exit code."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise

    @property
    def running(self) -> bool:
        """True while the ``cellwork up`` process started here has not exited."""
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> CellProcess:
        return self if self.running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
