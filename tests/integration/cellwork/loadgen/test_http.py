"""``cellwork loadgen --scenario cellwork.loadgen.http`` through the CLI, against a real server."""

import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

CLI = [sys.executable, "-m", "cellwork", "loadgen", "--scenario", "cellwork.loadgen.http"]


@dataclass
class Seen:
    """What the server was sent, by method and path, with the bodies and one header."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    bodies: Counter[bytes] = field(default_factory=Counter)
    tokens: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def server() -> Iterator[tuple[str, Seen]]:
    """A small HTTP/1.1 server (keep-alive) on a free port: 200 on /ok, 404 elsewhere."""
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with seen.lock:
                seen.requests[self.command, self.path] += 1
                seen.bodies[body] += 1
                seen.tokens[self.headers.get("x-token", "")] += 1
            status = 200 if self.path == "/ok" else 404
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST = answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def loadgen(*args: str) -> dict:
    ran = subprocess.run(
        [*CLI, *args, "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def test_every_planned_get_is_sent_on_schedule_and_answered(server):
    base, seen = server
    summary = loadgen("--url", f"{base}/ok", "--rate", "50", "--duration", "1")

    requests = summary["requests"]
    assert requests["planned"] == 50  # rate x duration
    assert (requests["sent"], requests["ok"], requests["errors"]) == (50, 50, 0)
    assert requests["dropped"] == 0
    assert summary["routes"]["GET /ok"]["count"] == 50
    assert seen.requests == {("GET", "/ok"): 50}
    assert summary["config"]["scenario"] == "cellwork.loadgen.http"
    assert summary["client"]["send_lag_p99_ms"] is not None


def test_a_post_carries_its_body_and_headers_and_non_2xx_answers_count_as_errors(server):
    base, seen = server
    summary = loadgen(
        "--url", f"{base}/missing", "--method", "post", "--body", '{"n": 1}',
        "--header", "x-token: abc", "--rate", "20", "--duration", "1",
    )  # fmt: skip

    assert seen.requests == {("POST", "/missing"): 20}
    assert seen.bodies == {b'{"n": 1}': 20}
    assert seen.tokens == {"abc": 20}
    assert summary["requests"]["ok"] == 0
    assert summary["routes"]["POST /missing"]["errors"] == {"404": 20}
