"""`cellwork loadgen` against the real learnfeed cell, through the public contract only."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from cellwork.testing import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "cellwork"]
START_TIMEOUT = 40.0


def _all_serving(state_dir: Path, services: int) -> bool:
    shown = subprocess.run(
        [*CLI, "status", "--json", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=15,
    )
    if shown.returncode != 0:
        return False
    rows = json.loads(shown.stdout)["instances"]
    return len(rows) == services and all(row["status"] == "SERVING" for row in rows)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def learnfeed_cell(tmp_path):
    """The learnfeed cell from its own cell file, one instance a service, on free ports."""
    spec = yaml.safe_load((REPO / "src/learnfeed/cell.yaml").read_text())
    spec["state_dir"] = str(tmp_path / "state")
    for service in spec["services"].values():
        service["replicas"] = 1
    cell_file = tmp_path / "cell.yaml"
    cell_file.write_text(yaml.safe_dump(spec))
    gateway_port, push_port = free_port(), free_port()
    env = {
        **os.environ,
        "CELLWORK_GATEWAY_PORT": str(gateway_port),
        "CELLWORK_PUSH_PORT": str(push_port),
    }
    log_path = tmp_path / "cell.log"
    with log_path.open("wb") as log:
        cell = subprocess.Popen(
            [*CLI, "up", "-f", str(cell_file), "--demo"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    gateway, push = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{push_port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (
            _all_serving(tmp_path / "state", len(spec["services"]))
            and _ready(gateway)
            and _ready(push)
        ):
            assert cell.poll() is None, f"the cell exited:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.5)
        yield gateway, f"ws://127.0.0.1:{push_port}"
    finally:
        cell.send_signal(signal.SIGINT)
        try:
            code = cell.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cell.kill()
            cell.wait(timeout=10)
            pytest.fail("the cell did not stop within 30 s of SIGINT")
        assert code is not None


def test_loadgen_drives_every_route_of_the_mix_and_times_feed_ready(learnfeed_cell):
    gateway, push = learnfeed_cell
    args = ["--gateway", gateway, "--push", push, "--users", "5", "--rate", "30"]
    ran = subprocess.run(
        [*CLI, "loadgen", *args, "--duration", "5", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)

    assert summary["signup"]["ok"] == 5
    assert summary["sockets"]["open"] == 5
    assert summary["requests"]["planned"] == 150
    assert summary["requests"]["ok"] > 0
    for route in ("feed", "home", "interaction"):
        assert summary["routes"][route]["count"] > 0, route
        assert summary["routes"][route]["ok"] > 0, summary["routes"][route]
    server_errors = {k: n for k, n in summary["errors_by_status"].items() if k.startswith("5")}
    assert server_errors == {}
    ready = summary["feed_ready"]
    assert ready["count"] >= 1 and ready["p50_ms"] is not None
    assert ready["frames"] >= ready["count"]
