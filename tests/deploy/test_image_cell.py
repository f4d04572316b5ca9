"""The one image runs a whole cell: `cellwork up learnfeed --demo` in a container, served
on its published gateway port, drained by the container engine's SIGTERM."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cellwork.testing import free_port

from .conftest import Engine

# The first test here builds the image (a session fixture): a build whose dependency layer
# is not cached takes minutes, far past the default per-test timeout.
pytestmark = pytest.mark.timeout(1500)

BOUND = 180.0  # seconds for the cell to come up: eleven processes on a loaded 2-core machine
GRACE = 30  # seconds `stop` waits after SIGTERM before it kills


def eventually(what: str, check: Callable[[], Any], timeout: float = BOUND) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.5)


def test_the_image_runs_the_learnfeed_cell_serves_its_api_and_drains_on_sigterm(
    engine: Engine, image: str
) -> None:
    port = free_port()
    name = f"cellwork-cell-{uuid.uuid4().hex[:8]}"
    engine.run(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
        image, "up", "learnfeed", "--demo",
    )  # fmt: skip
    try:

        def running() -> bool:
            state = engine.run("inspect", name, "--format", "{{.State.Running}}")
            return state.stdout.strip() == "true"

        def cell_status() -> list[dict[str, Any]]:
            assert running(), engine.run("logs", name).stderr[-3000:]
            shown = engine.run("exec", name, "cellwork", "status", "--json", check=False)
            rows: list[dict[str, Any]] = (
                json.loads(shown.stdout)["instances"] if shown.returncode == 0 else []
            )
            return rows if rows and all(r["status"] == "SERVING" for r in rows) else []

        rows = eventually("every instance SERVING", cell_status)
        assert {r["service"] for r in rows} == {
            "identity", "catalog", "feed", "recommender", "gateway", "push",
        }  # fmt: skip
        # Each instance has its own ports, whatever the image's CELLWORK_GRPC_PORT says.
        grpc_ports = [r["grpc_port"] for r in rows]
        metrics_ports = [r["metrics_port"] for r in rows]
        assert len(set(grpc_ports)) == len(rows) and 50051 not in grpc_ports
        assert len(set(metrics_ports)) == len(rows) and 9090 not in metrics_ports
        if engine.name == "podman":  # docker runs health checks only on its own schedule
            # The image's own HEALTHCHECK (`cellwork probe`) asks the cell's supervisor.
            assert engine.run("healthcheck", "run", name, check=False).returncode == 0

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            def ready() -> bool:
                try:
                    return client.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            eventually("the published gateway ready", ready)
            signup = client.post(
                "/v1/auth/signup",
                json={"email": "ada@example.org", "password": "correct horse", "name": "Ada"},
            )
            assert signup.status_code == 201, signup.text
            token = signup.json()["access_token"]
            feed = client.get(
                "/v1/feed", params={"limit": 5}, headers={"Authorization": f"Bearer {token}"}
            )
            assert feed.status_code == 200, feed.text
            body = feed.json()
            assert body["version"] == 0 and len(body["items"]) == 5
            assert all(item["title"] and item["educator"]["name"] for item in body["items"])

        started = time.monotonic()
        engine.run("stop", "-t", str(GRACE), name, timeout=GRACE + 60)
        assert time.monotonic() - started < GRACE, "SIGTERM did not stop the cell in its grace"
        code = engine.run("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert code == "0"  # drained and exited, not killed
        logs = engine.run("logs", name)
        assert "supervisor.stopped" in logs.stdout + logs.stderr
    finally:
        engine.run("rm", "-f", name, check=False)
