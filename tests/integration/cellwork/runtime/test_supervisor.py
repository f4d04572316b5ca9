"""The supervisor's shell on a real nats-server: with fake instance processes (the
registry it follows, the nats-server it keeps, its control socket), and as a real
``cellwork up`` (what dies with it, how it stops after a NATS restart)."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from nats.js.api import StreamConfig
from nats.js.errors import BucketNotFoundError

from cellwork.discovery.instance import InstanceInfo
from cellwork.discovery.registry import Registry
from cellwork.discovery.watcher import RegistryWatcher
from cellwork.events.connection import connect_nats
from cellwork.runtime.cellfile import CellSpec
from cellwork.runtime.control import CellState, request
from cellwork.runtime.events import SignalReceived
from cellwork.runtime.supervisor import Supervisor
from cellwork.testing import CellProcess
from tests.fakes import FakeProcesses
from tests.waiting import wait_until


@pytest.fixture
async def nc(nats_server):
    conn = await connect_nats(nats_server.url, name="test-supervisor")
    yield conn
    await conn.close()


async def test_the_supervisor_uses_the_registry_bucket_and_ttl_of_the_cell_env(
    tmp_path, nats_server, nc
):
    spec = CellSpec.model_validate(
        {
            "name": "t",
            "state_dir": str(tmp_path / "state"),
            "env": {"CELLWORK_REGISTRY_BUCKET": "cell_registry", "CELLWORK_REGISTRY_TTL": "7"},
            "services": {"echo": {"module": "cellwork.testing.echo"}},
        }
    )
    environ = {**os.environ, "CELLWORK_REGISTRY_BUCKET": "supervisor_env_registry"}
    processes = FakeProcesses(dies_on=(signal.SIGTERM, signal.SIGKILL))
    sup = Supervisor(spec, nats_url=nats_server.url, environ=environ, processes=processes)
    task = asyncio.create_task(sup.run())
    try:
        await asyncio.wait_for(sup.started.wait(), 15)
        js = nc.jetstream(timeout=5)
        bucket = await js.key_value("cell_registry")
        assert (await bucket.status()).ttl == 7.0
        for other in ("cellwork_registry", "supervisor_env_registry"):
            with pytest.raises(BucketNotFoundError):
                await js.key_value(other)

        # The instance registers where its settings say; the supervisor follows that bucket.
        registry = await Registry.open(nc, "cell_registry", 7.0)
        instance = processes.launched[0]
        assert instance.env["CELLWORK_REGISTRY_BUCKET"] == "cell_registry"
        record = InstanceInfo("echo", "echo-0", "127.0.0.1", 5999, pid=instance.process.pid)
        await registry.put(record)
        await sup.wait_until(lambda s: s.status()[0]["grpc_port"] == 5999, 10)

        # Its exit deletes the record from that bucket at once: well within the 7 s TTL.
        watcher = RegistryWatcher(registry, "echo")
        await watcher.start()
        try:
            instance.process.exit(1)
            await watcher.wait_until(lambda instances: instances == [], 5)
        finally:
            await watcher.close()
    finally:
        sup.post(SignalReceived(signal.SIGTERM))
        await asyncio.wait_for(task, 20)
    assert not (sup.state_dir / "cell.json").exists()


# -- the embedded nats-server kept alive; the control socket -----------------------------


def embedded_spec(tmp_path: Path, replicas: int = 1) -> CellSpec:
    return CellSpec.model_validate(
        {
            "name": "t",
            "state_dir": str(tmp_path / "s"),
            "services": {"echo": {"module": "cellwork.testing.echo", "replicas": replicas}},
        }
    )


@pytest.fixture
async def embedded(tmp_path):
    """A supervisor with its own nats-server and fake instances, running until the test ends."""
    processes = FakeProcesses(dies_on=(signal.SIGTERM, signal.SIGKILL))
    sup = Supervisor(embedded_spec(tmp_path, replicas=2), processes=processes)
    task = asyncio.create_task(sup.run())
    await asyncio.wait_for(sup.started.wait(), 30)
    yield sup
    sup.post(SignalReceived(signal.SIGTERM))
    await asyncio.wait_for(task, 30)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellwork", *args], capture_output=True, text=True, timeout=60
    )


async def test_a_killed_nats_server_comes_back_on_its_port_with_its_streams(embedded):
    state = CellState.read(embedded.state_dir)
    nc = await connect_nats(state.nats_url, name="test")
    try:
        js = nc.jetstream(timeout=5)
        await js.add_stream(StreamConfig(name="KEEP", subjects=["keep.>"]))
        await js.publish("keep.one", b"kept")
        before = (await request(state, "status", {}, timeout=10))["nats"]
        assert (before["state"], before["restarts"], before["url"]) == ("up", 0, state.nats_url)

        os.kill(before["pid"], signal.SIGKILL)

        async def restarted() -> bool:
            nats = (await request(state, "status", {}, timeout=10))["nats"]
            return nats["state"] == "up" and nats["restarts"] == 1

        await wait_until(restarted, "the supervisor to start nats-server again")
        after = (await request(state, "status", {}, timeout=10))["nats"]
        assert after["pid"] != before["pid"] and after["url"] == state.nats_url

        async def stream_survived() -> bool:
            try:
                return (await js.stream_info("KEEP")).state.messages == 1
            except Exception:  # the client is still reconnecting
                return False

        await wait_until(stream_survived, "the KEEP stream and its message after the restart")
    finally:
        await nc.close()


async def test_the_control_socket_answers_status_scale_and_chaos_through_the_cli(embedded):
    state_dir = str(embedded.state_dir)
    shown = await asyncio.to_thread(cli, "status", "--json", "--state-dir", state_dir)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert [r["id"] for r in status["instances"]] == ["echo-0", "echo-1"]
    assert status["nats"]["embedded"] is True and status["nats"]["state"] == "up"
    table = await asyncio.to_thread(cli, "status", "--state-dir", state_dir)
    assert "echo-1" in table.stdout and "up (pid" in table.stdout

    scaled = await asyncio.to_thread(cli, "scale", "echo", "3", "--state-dir", state_dir)
    assert scaled.returncode == 0 and "echo: 2 -> 3 instances" in scaled.stdout
    assert [r["id"] for r in embedded.status()] == ["echo-0", "echo-1", "echo-2"]

    victim = embedded.status()[1]["pid"]
    killed = await asyncio.to_thread(
        cli, "chaos", "kill", "echo", "--instance", "echo-1", "--state-dir", state_dir
    )
    assert killed.returncode == 0, killed.stderr
    assert f"killed echo-1 (pid {victim}) with SIGKILL" in killed.stdout
    await embedded.wait_until(lambda s: s.status()[1]["restarts"] == 1, 30)

    paused = await asyncio.to_thread(
        cli, "chaos", "pause", "echo", "--for", "0.5", "--state-dir", state_dir
    )
    assert paused.returncode == 0 and "paused echo-0" in paused.stdout

    for bad, reason in [
        (("chaos", "kill", "nope"), "unknown service 'nope'"),
        (("chaos", "kill", "echo", "--instance", "echo-9"), "echo has no instance 'echo-9'"),
        (("scale", "nope", "1"), "unknown service 'nope'"),
    ]:
        refused = await asyncio.to_thread(cli, *bad, "--state-dir", state_dir)
        assert refused.returncode == 1 and reason in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


async def test_chaos_nats_restart_holds_nats_down_then_the_supervisor_restarts_it(embedded):
    state_dir = str(embedded.state_dir)
    done = await asyncio.to_thread(
        cli, "chaos", "nats", "restart", "--down", "8", "--state-dir", state_dir
    )
    assert done.returncode == 0, done.stderr
    assert "killed nats-server (pid" in done.stdout and "restarts after 8s" in done.stdout
    await embedded.wait_until(lambda s: s.nats_status()["state"] == "down", 30)
    shown = await asyncio.to_thread(cli, "status", "--state-dir", state_dir)
    assert "nats" in shown.stdout and "down for" in shown.stdout  # status works without NATS
    await embedded.wait_until(
        lambda s: s.nats_status()["state"] == "up" and s.nats_status()["restarts"] == 1, 30
    )


async def test_a_cell_of_an_external_nats_refuses_to_restart_it(tmp_path, nats_server):
    spec = embedded_spec(tmp_path)
    processes = FakeProcesses(dies_on=(signal.SIGTERM, signal.SIGKILL))
    sup = Supervisor(spec, nats_url=nats_server.url, processes=processes)
    task = asyncio.create_task(sup.run())
    try:
        await asyncio.wait_for(sup.started.wait(), 30)
        refused = await asyncio.to_thread(
            cli, "chaos", "nats", "restart", "--state-dir", str(sup.state_dir)
        )
        assert refused.returncode == 1 and "external NATS" in refused.stderr
    finally:
        sup.post(SignalReceived(signal.SIGTERM))
        await asyncio.wait_for(task, 30)


# -- a real cell: nothing outlives its supervisor; Ctrl-C after a NATS restart ------------

ECHO_CELL = {
    "name": "t",
    "supervisor": {"health_interval": 0.25, "stop_grace": 10.0},
    "services": {"echo": {"module": "cellwork.testing.echo", "replicas": 2}},
}


def cell_pids(cell: CellProcess) -> set[int]:
    """The cell's nats-server and instances, from ``cellwork status``."""
    shown = cli("status", "--json", "--state-dir", str(cell.state_dir))
    status = json.loads(shown.stdout)
    return {status["nats"]["pid"], *(r["pid"] for r in status["instances"])}


def gone(pids: set[int]) -> bool:
    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return not any(alive(pid) for pid in pids)


async def test_nats_server_and_instances_die_with_a_killed_supervisor(tmp_path):
    cell = CellProcess(ECHO_CELL, tmp_path, demo=False)
    await asyncio.to_thread(cell.start, 60)
    try:
        pids = await asyncio.to_thread(cell_pids, cell)
        assert len(pids) == 3 and gone(pids) is False
        assert cell.process is not None
        cell.process.kill()
        cell.process.wait(10)
        await wait_until(lambda: gone(pids), "nats-server and instances to die with it")
    finally:
        await asyncio.to_thread(cell.stop)


async def test_ctrl_c_after_a_nats_restart_stops_the_cell_cleanly(tmp_path):
    cell = CellProcess(ECHO_CELL, tmp_path, demo=False)
    await asyncio.to_thread(cell.start, 60)
    try:
        before = await asyncio.to_thread(cell_pids, cell)
        restarted = await asyncio.to_thread(
            cli, "chaos", "nats", "restart", "--state-dir", str(cell.state_dir)
        )
        assert restarted.returncode == 0, restarted.stderr

        def nats_back() -> bool:
            status = json.loads(cli("status", "--json", "--state-dir", str(cell.state_dir)).stdout)
            return status["nats"]["state"] == "up" and status["nats"]["restarts"] == 1

        await wait_until(lambda: asyncio.to_thread(nats_back), "nats-server to be restarted")
        pids = before | await asyncio.to_thread(cell_pids, cell)
    finally:
        code = await asyncio.to_thread(cell.stop, 60)
    assert code == 0, cell.log_tail()
    assert gone(pids)
    assert not (cell.state_dir / "cell.json").exists()
    assert "supervisor.nats_restarted" in cell.log_tail(200_000)
