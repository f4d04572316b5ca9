"""How the supervisor starts an instance: its command, its environment, its log file.

The supervisor's loop sees an instance only through ``InstanceProcess`` (the
part of ``asyncio.subprocess.Process`` it uses) and starts one only through a
``ProcessFactory``, so tests hand in fake processes and drive every restart,
hang and drain without forking anything. ``spawn_serve`` is the real factory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Ports an instance picks for itself. The supervisor's own environment may name
# fixed ones (a container image sets CELLWORK_GRPC_PORT=50051 for its single
# instance); inherited, they would make every replica of the cell collide.
FREE_PORTS = {"CELLWORK_GRPC_PORT": "0", "CELLWORK_METRICS_PORT": "0"}


class InstanceProcess(Protocol):
    """A started instance, as the supervisor sees it."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None:
        """None while the process runs."""

    async def wait(self) -> int:
        """Wait for the process to exit; returns its exit code (negative: killed by a signal)."""
        ...

    def send_signal(self, signum: int, /) -> None:
        """Send a signal; raises ProcessLookupError when the process is already gone."""


ProcessFactory = Callable[[str, Mapping[str, str], Path], Awaitable[InstanceProcess]]
"""``await factory(module, env, log_path)`` starts ``python -m cellwork serve module``."""


def instance_env(
    environ: Mapping[str, str], cell_env: Mapping[str, str], fixed: Mapping[str, str]
) -> dict[str, str]:
    """The environment of one instance, later sources winning: the supervisor's own
    ``environ``, free ports, the cell file's env (cell-wide, then the service's own:
    they may fix ports on purpose), then what the supervisor decides (``fixed``)."""
    return {**environ, **FREE_PORTS, **cell_env, **fixed}


@dataclass(frozen=True, slots=True)
class InstanceLauncher:
    """Starts instances of one cell: builds each one's environment and log path and
    hands them to ``processes``."""

    processes: ProcessFactory
    environ: Mapping[str, str]
    nats_url: str
    state_dir: Path
    zone: str

    def env_for(
        self, service: str, instance_id: str, cell_env: Mapping[str, str]
    ) -> dict[str, str]:
        """The environment an instance of ``service`` called ``instance_id`` starts with."""
        fixed = {
            "CELLWORK_SERVICE": service,
            "CELLWORK_INSTANCE_ID": instance_id,
            "CELLWORK_NATS_URL": self.nats_url,
            "CELLWORK_STATE_DIR": str(self.state_dir),
            "CELLWORK_ZONE": self.zone,
        }
        return instance_env(self.environ, cell_env, fixed)

    async def launch(
        self, service: str, instance_id: str, module: str, cell_env: Mapping[str, str]
    ) -> InstanceProcess:
        """Start one instance; its output goes to ``<state dir>/logs/<instance id>.log``."""
        log_path = self.state_dir / "logs" / f"{instance_id}.log"
        return await self.processes(module, self.env_for(service, instance_id, cell_env), log_path)


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM this child if the supervisor dies, so nothing is orphaned.

    A ``preexec_fn``. Linux ties PR_SET_PDEATHSIG to the *thread* that forked: fork
    from the loop's thread (never from ``asyncio.to_thread``), or the child is
    signalled when that worker thread ends."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def spawn_serve(module: str, env: Mapping[str, str], log_path: Path) -> InstanceProcess:
    """Start ``python -m cellwork serve module`` (this Python) in its own session,
    output appended to ``log_path``. Must run on the loop's thread: PDEATHSIG is tied
    to the thread that forks."""
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cellwork",
            "serve",
            module,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which drains in order
            preexec_fn=die_with_parent,
        )
