"""The local cell with real processes: self-healing, scaling, draining, the CLI."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from cellwork.runtime.cellfile import CellSpec
from cellwork.runtime.events import SignalReceived
from cellwork.runtime.supervisor import Supervisor
from cellwork.testing import CellProcess, free_port
from tests.cellsite import register_cell

pytestmark = pytest.mark.e2e

# A bound on what should take a few seconds, wide enough for a loaded 2-core machine.
BOUND = 60.0

CLI = [sys.executable, "-m", "cellwork"]


def make_spec(tmp_path: Path, **services) -> CellSpec:
    return CellSpec.model_validate(
        {
            "name": "t",
            "state_dir": str(tmp_path / "state"),
            "supervisor": {
                "health_interval": 0.25,
                "hang_timeout": 2.0,
                "startup_timeout": 20.0,
                "restart_backoff_base": 0.2,
                "stop_grace": 2.0,
            },
            "services": services or {"echo": {"module": "cellwork.testing.echo", "replicas": 2}},
        }
    )


def serving(sup: Supervisor, service: str = "echo", n: int | None = None) -> bool:
    rows = [r for r in sup.status() if r["service"] == service]
    return (
        bool(rows) and all(r["status"] == "SERVING" for r in rows) and (n is None or len(rows) == n)
    )


@pytest.fixture
async def cell(tmp_path):
    sups = []

    async def start(spec: CellSpec) -> Supervisor:
        sup = Supervisor(spec)
        sup.task = asyncio.create_task(sup.run())
        sups.append(sup)
        await asyncio.wait_for(sup.started.wait(), BOUND)
        return sup

    yield start
    for sup in sups:
        if not sup.task.done():
            sup.post(SignalReceived(signal.SIGTERM))
            await asyncio.wait_for(sup.task, BOUND)


def pids(sup: Supervisor) -> set[int]:
    return {r["pid"] for r in sup.status() if r["pid"]}


def running(pid: int) -> bool:
    """Alive and not merely waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def eventually(condition: Callable[[], bool], timeout: float) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still false after {timeout} s"
        await asyncio.sleep(0.05)


async def test_a_killed_instance_is_replaced_under_its_id_and_serves_again(tmp_path, cell):
    sup = await cell(make_spec(tmp_path))
    await sup.wait_until(lambda s: serving(s, n=2), BOUND)
    victim = sup.status()[0]
    os.kill(victim["pid"], signal.SIGKILL)
    await sup.wait_until(
        lambda s: serving(s, n=2) and s.status()[0]["pid"] not in (None, victim["pid"]), BOUND
    )
    row = sup.status()[0]
    assert row["restarts"] == 1 and row["id"] == victim["id"]


async def test_a_hung_instance_is_killed_and_replaced(tmp_path, cell):
    sup = await cell(make_spec(tmp_path))
    await sup.wait_until(lambda s: serving(s, n=2), BOUND)
    victim = sup.status()[1]
    os.kill(victim["pid"], signal.SIGSTOP)  # alive, but answers nothing: hung
    try:
        # A new process in the slot, serving: how long that takes depends on how busy
        # the machine is (a Python start-up under load takes seconds), so the bound is wide.
        await sup.wait_until(
            lambda s: s.status()[1]["pid"] not in (None, victim["pid"]) and serving(s, n=2),
            BOUND,
        )
    finally:
        if psutil.pid_exists(victim["pid"]):
            os.kill(victim["pid"], signal.SIGKILL)
    await eventually(lambda: not running(victim["pid"]), BOUND)
    assert sup.status()[1]["restarts"] >= 1


async def test_cli_status_and_scale_act_on_the_running_cell(tmp_path, cell):
    sup = await cell(make_spec(tmp_path))
    await sup.wait_until(lambda s: serving(s, n=2), 20)
    state = ["--state-dir", str(sup.state_dir)]

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run, [*CLI, *args, *state], capture_output=True, text=True, timeout=30
        )

    shown = await cli("status", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)["instances"]
    assert {r["id"] for r in rows} == {"echo-0", "echo-1"}
    assert set(rows[0]) == {
        "service", "id", "pid", "host", "grpc_port", "metrics_port", "status", "restarts", "uptime",
    }  # fmt: skip
    assert all(r["status"] == "SERVING" and r["grpc_port"] > 0 for r in rows)
    # The call pipeline as the instances' metrics show it: echo relays through a client
    # of echo, whose breaker is closed.
    calls = json.loads(shown.stdout)["calls"]
    assert [(c["caller"], c["target"], c["breaker"]) for c in calls] == [("echo", "echo", "closed")]
    assert isinstance(json.loads(shown.stdout)["shedding"], list)

    before = pids(sup)
    up = await cli("scale", "echo", "3")
    assert up.returncode == 0, up.stderr
    await sup.wait_until(lambda s: serving(s, n=3), 20)
    assert before < pids(sup)  # the first two kept running: no restart
    at_three = pids(sup)

    down = await cli("scale", "echo", "1")
    assert down.returncode == 0, down.stderr
    await sup.wait_until(lambda s: serving(s, n=1), 20)
    gone = at_three - pids(sup)
    assert len(gone) == 2
    await eventually(lambda: not any(running(p) for p in gone), 10)

    unknown = await cli("scale", "nope", "2")
    assert unknown.returncode != 0 and "unknown service" in unknown.stderr


async def test_draining_the_cell_leaves_no_process_behind(tmp_path, cell):
    spec = make_spec(
        tmp_path,
        echo={"module": "cellwork.testing.echo", "replicas": 2},
        stubborn={
            "module": "cellwork.testing.echo",
            "replicas": 1,
            "env": {"CELLWORK_ECHO_IGNORE_SIGTERM": "1"},
        },
    )
    sup = await cell(spec)
    await sup.wait_until(lambda s: serving(s, "echo", 2) and serving(s, "stubborn", 1), BOUND)
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    assert len(children) >= 4  # nats-server and three instances
    sup.post(SignalReceived(signal.SIGINT))
    # The stubborn one ignores SIGTERM for ever: the drain ending at all means it was
    # killed once its 2 s grace ran out.
    await asyncio.wait_for(sup.task, BOUND)
    await eventually(lambda: not any(running(p) for p in children), BOUND)
    assert not (sup.state_dir / "cell.json").exists()


async def test_an_idle_instance_stays_under_80_mb(tmp_path, cell):
    sup = await cell(make_spec(tmp_path, echo={"module": "cellwork.testing.echo", "replicas": 1}))
    await sup.wait_until(lambda s: serving(s, n=1), 20)
    await sup.wait_until(lambda s: s.status()[0]["uptime"] >= 2.0, 20)  # settled, idle
    rss = psutil.Process(sup.status()[0]["pid"]).memory_info().rss
    print(f"idle echo instance RSS: {rss / 2**20:.1f} MiB")
    assert rss < 80 * 2**20


def test_cellwork_up_runs_the_learnfeed_cell_until_ctrl_c(tmp_path):
    """What `make up` runs, through the real CLI, from a clean working directory: the
    cell is found by its registered name, not through a path into the source tree."""
    # Free ports, so a cell the developer runs on 8080/8081 is not joined by this one.
    http_port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CELLWORK_GATEWAY_PORT": str(http_port),
        "CELLWORK_PUSH_PORT": str(free_port()),
    }
    up = subprocess.Popen(
        [*CLI, "up", "learnfeed", "--demo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        rows: list[dict] = []
        while time.monotonic() < deadline:
            shown = subprocess.run(
                [*CLI, "status", "--json", "learnfeed"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=20,
            )
            if shown.returncode == 0:
                rows = json.loads(shown.stdout)["instances"]
                if rows and all(r["status"] == "SERVING" for r in rows):
                    break
            time.sleep(0.5)
        assert rows and all(r["status"] == "SERVING" for r in rows), rows
        assert (tmp_path / ".cellwork" / "learnfeed" / "cell.json").exists()
        table = subprocess.run(  # no name: the only registered cell
            [*CLI, "status"], cwd=tmp_path, capture_output=True, text=True, timeout=20
        )
        assert "SERVING" in table.stdout
        assert {r["service"] for r in rows} >= {"gateway", "feed", "recommender", "push"}
        ready = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=5)
        assert json.loads(ready.read())["ready"] is True
        children = {p.pid for p in psutil.Process(up.pid).children(recursive=True)}
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=30)
        assert up.returncode == 0, output
        assert "supervisor.stopped" in output
        assert [p for p in children if psutil.pid_exists(p)] == []
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_a_cell_an_installed_package_registers_runs_by_name_from_any_directory(tmp_path):
    """An application's distribution registers its cell (entry point group cellwork.cells,
    cell.yaml as package data); `cellwork up NAME` runs it wherever it is typed."""
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    register_cell(site, "echoes")
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=30
        )

    up = subprocess.Popen(
        [*CLI, "up", "echoes"],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def serving_echo() -> bool:
            shown = cli("status", "echoes", "--json")
            rows = json.loads(shown.stdout)["instances"] if shown.returncode == 0 else []
            return [(r["id"], r["status"]) for r in rows] == [("echo-0", "SERVING")]

        deadline = time.monotonic() + 30
        while not serving_echo():
            assert up.poll() is None, up.communicate()[0]
            assert time.monotonic() < deadline, "the registered cell never served"
            time.sleep(0.3)
        assert (elsewhere / ".cellwork" / "echoes" / "cell.json").exists()
        # Two cells are registered now (echoes and learnfeed): a command must name one.
        ambiguous = cli("status")
        assert ambiguous.returncode == 2 and "echoes, learnfeed" in ambiguous.stderr
        # A container's health check, where the cell runs: its supervisor answers.
        assert cli("probe").returncode == 0
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=30)
        assert up.returncode == 0, output
        # Stopped: the state file is gone and probe has nothing to ask (and no port set).
        gone = cli("probe")
        assert gone.returncode != 0 and "CELLWORK_GRPC_PORT" in gone.stderr
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def _cells_running(cell_file: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "up" in cmdline and str(cell_file) in cmdline:
            found.append(process)
    return found


def test_a_started_cell_process_used_in_with_runs_one_cell_and_stops_it(tmp_path):
    spec = {"name": "cp", "services": {"echo": {"module": "cellwork.testing.echo"}}}
    cell_file = tmp_path / "cell.yaml"
    with CellProcess(spec, tmp_path).start(timeout=30) as cell:
        assert [p.pid for p in _cells_running(cell_file)] == [cell.process.pid]
        with pytest.raises(RuntimeError, match="already running"):
            cell.start()
    assert not cell.running
    assert _cells_running(cell_file) == []
