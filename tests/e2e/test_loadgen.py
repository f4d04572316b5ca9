"""`cellwork loadgen --scenario learnfeed.loadgen` against the real learnfeed cell."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cellwork.testing import CellProcess, free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "cellwork"]
START_TIMEOUT = 40.0


@pytest.fixture
def learnfeed_cell(tmp_path):
    """The learnfeed cell from its own cell file, one instance a service, on free ports."""
    spec = yaml.safe_load((REPO / "src/learnfeed/cell.yaml").read_text())
    for service in spec["services"].values():
        service["replicas"] = 1
    gateway_port, push_port = free_port(), free_port()
    spec["env"] = {
        "CELLWORK_GATEWAY_PORT": str(gateway_port),
        "CELLWORK_PUSH_PORT": str(push_port),
    }
    gateway, push = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{push_port}"
    ready = (f"{gateway}/readyz", f"{push}/readyz")
    with CellProcess(spec, tmp_path, ready_urls=ready).start(timeout=START_TIMEOUT):
        yield gateway, f"ws://127.0.0.1:{push_port}"


def test_loadgen_drives_every_route_of_the_mix_and_times_feed_ready(learnfeed_cell):
    gateway, push = learnfeed_cell
    scenario = ["--scenario", "learnfeed.loadgen", "--gateway", gateway, "--push", push]
    ran = subprocess.run(
        [*CLI, "loadgen", *scenario, "--users", "5", "--rate", "30", "--duration", "5", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    sections = summary["sections"]

    assert sections["signup"]["ok"] == 5
    assert sections["sockets"]["open"] == 5
    assert summary["requests"]["planned"] == 150
    assert summary["requests"]["ok"] > 0
    for route in ("feed", "home", "interaction"):
        assert summary["routes"][route]["count"] > 0, route
        assert summary["routes"][route]["ok"] > 0, summary["routes"][route]
    server_errors = {k: n for k, n in summary["errors_by_status"].items() if k.startswith("5")}
    assert server_errors == {}
    ready = sections["feed_ready"]
    assert ready["count"] >= 1 and ready["p50_ms"] is not None
    assert ready["frames"] >= ready["count"]
