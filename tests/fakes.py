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
        self.failing = 0  # the next this many starts raise OSError, as a fork that fails
        self._dies_on = dies_on
        self._pids = itertools.count(1000)

    async def __call__(self, module: str, env: Mapping[str, str], log_path: Path) -> FakeProcess:
        if self.failing:
            self.failing -= 1
            raise OSError(11, "Resource temporarily unavailable")
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


class FakeNats:
    """A ``NatsLauncher`` whose servers are ``FakeProcess`` objects (pids from 9000): a
    test says when one is ready (``ready.set()``) or makes the next launch fail."""

    url = "nats://127.0.0.1:4222"

    def __init__(self) -> None:
        self.launched: list[FakeProcess] = []
        self.failing = 0
        self.ready = asyncio.Event()
        self.ready_answer = True
        self._pids = itertools.count(9000)

    @property
    def process(self) -> FakeProcess | None:
        return self.launched[-1] if self.launched else None

    async def launch(self) -> FakeProcess:
        if self.failing:
            self.failing -= 1
            raise FileNotFoundError("nats-server not found")
        self.ready.clear()
        process = FakeProcess(next(self._pids), (signal.SIGKILL, signal.SIGTERM))
        self.launched.append(process)
        return process

    async def wait_ready(self, timeout: float) -> bool:
        await self.ready.wait()
        return self.ready_answer


class ManualClock:
    """Time that moves only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def clock(self) -> Clock:
        return Clock(monotonic=lambda: self.now, wall=lambda: 1.7e9 + self.now)
