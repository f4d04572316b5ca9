"""The ceiling: a bare Starlette app answering the feed body as pre-rendered bytes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from feedbench.local import FEED_PATH, HOST, REPO, free_port
from feedbench.procs import taskset_prefix

ENTRY = Path(__file__).resolve().parents[1] / "feed.py"  # re-run with --serve-ceiling


def serve_ceiling(port: int, body_file: Path) -> None:
    """A bare Starlette app on uvicorn answering the pre-rendered feed body."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    body = body_file.read_bytes()

    async def feed(request: Request) -> Response:
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/v1/feed", feed)])
    uvicorn.run(
        app,
        host=HOST,
        port=port,
        loop="uvloop",
        http="httptools",
        workers=1,
        log_level="warning",
        access_log=False,
    )


@dataclass
class Ceiling:
    body_file: Path
    cpus: str | None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        command = [
            *taskset_prefix(self.cpus),
            sys.executable,
            str(ENTRY),
            "--serve-ceiling",
            str(self.port),
            "--ceiling-body",
            str(self.body_file),
        ]
        self.process = subprocess.Popen(
            command, cwd=REPO, stdin=subprocess.DEVNULL, start_new_session=True
        )

    async def wait_ready(self, timeout: float = 20.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"ceiling server exited with {self.process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}{FEED_PATH}")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError("ceiling server did not answer")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
