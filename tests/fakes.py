"""Stand-ins for what supervisor tests replace on purpose: instance processes and the clock."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from cellwork.runtime.supervisor_core import Clock


class FakeProcess:
    """An instance process that runs until ``exit(code)``, or until it gets a signal
    in ``dies_on`` (then it exits with ``-signum``, as a killed process does)."""

    def __init__(self, pid: int, dies_on: Collection[int]) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.signals: list[int] = []
        self._dies_on = dies_on
        self._exited = asyncio.Event()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int, /) -> None:
        if self.returncode is not None:
            raise ProcessLookupError(self.pid)
        self.signals.append(signum)
        if signum in self._dies_on:
            self.exit(-signum)

    def exit(self, code: int) -> None:
        self.returncode = code
        self._exited.set()


@dataclass(frozen=True)
class Launch:
    """One start the supervisor asked for."""

    module: str
    env: dict[str, str]
    log_path: Path
    process: FakeProcess


class FakeProcesses:
    """A process factory that starts ``FakeProcess`` objects and keeps every launch."""

    def __init__(self, dies_on: Collection[int] = (signal.SIGKILL,)) -> None:
        self.launched: list[Launch] = []
        self._dies_on = dies_on
        self._pids = itertools.count(1000)

    async def __call__(self, module: str, env: Mapping[str, str], log_path: Path) -> FakeProcess:
        process = FakeProcess(next(self._pids), self._dies_on)
        self.launched.append(Launch(module, dict(env), log_path, process))
        return process

    def of(self, instance_id: str) -> list[FakeProcess]:
        """Every process started for ``instance_id``, oldest first."""
        return [
            launch.process
            for launch in self.launched
            if launch.env["CELLWORK_INSTANCE_ID"] == instance_id
        ]


class ManualClock:
    """Time that moves only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def clock(self) -> Clock:
        return Clock(monotonic=lambda: self.now, wall=lambda: 1.7e9 + self.now)
