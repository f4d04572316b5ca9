"""``cellwork restart SERVICE --rolling`` on a real cell (``cellwork up``, echo instances)
while a client keeps calling: every call succeeds, and every old instance went DRAINING
in the registry before it left it."""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from pathlib import Path

import psutil

from cellwork import Service, ServiceSettings
from cellwork.discovery.instance import InstanceInfo
from cellwork.discovery.registry import Registry
from cellwork.discovery.watcher import RegistryWatcher
from cellwork.events.connection import connect_nats
from cellwork.testing import CellProcess
from cellwork.testing.v1 import echo_pb2
from cellwork.testing.v1.echo_client import EchoClient
from tests.waiting import BOUND

ECHO_CELL = {
    "name": "t",
    "supervisor": {"health_interval": 0.25, "stop_grace": 10.0},
    "services": {"echo": {"module": "cellwork.testing.echo", "replicas": 2}},
}
CALL_EVERY = 0.02  # seconds between the client's calls: ~50 a second


async def cellwork(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cellwork",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"COLUMNS": "200", "PATH": ""},
    )
    out, _ = await asyncio.wait_for(process.communicate(), 4 * BOUND)
    return int(process.returncode or 0), out.decode()


class StatusHistory:
    """Each instance's registry statuses in the order seen, ``GONE`` once it left."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = defaultdict(list)
        self.order: list[str] = []  # "<instance> <status>", every instance's, as seen

    def __call__(self, snapshot: dict[str, InstanceInfo]) -> None:
        present = {info.instance_id: info.status.value for info in snapshot.values()}
        for instance, status in present.items():
            self._note(instance, status)
        for instance in list(self.seen):
            if instance not in present:
                self._note(instance, "GONE")

    def _note(self, instance: str, status: str) -> None:
        if self.seen[instance][-1:] != [status]:
            self.seen[instance].append(status)
            self.order.append(f"{instance} {status}")


async def test_a_rolling_restart_under_calls_drops_none_and_drains_every_old_instance(
    tmp_path: Path,
) -> None:
    cell = CellProcess(ECHO_CELL, tmp_path, demo=False)
    await asyncio.to_thread(cell.start, 60)
    caller = Service("caller", ServiceSettings(nats_url=cell.nats_url(), drain_propagation=0.05))
    client = caller.client("echo", EchoClient)
    nc = await connect_nats(cell.nats_url(), name="test-rollout")
    settings = ServiceSettings()
    registry = await Registry.open(nc, settings.registry_bucket, settings.registry_ttl)
    history = StatusHistory()
    watcher = RegistryWatcher(registry, "echo")
    watcher.add_listener(history)
    await watcher.start()
    await caller.start()
    try:
        old = {row["id"]: row["pid"] for row in await asyncio.to_thread(cell.instances)}
        assert sorted(old) == ["echo-0", "echo-1"]
        await client.balancer.wait_for_endpoints(2)
        answered: list[str] = []
        failed: list[str] = []
        calling = True

        async def call_all_along() -> None:
            while calling:
                try:
                    reply = await client.echo(echo_pb2.EchoRequest(payload=b"x"), timeout=2)
                    answered.append(reply.instance_id)
                except Exception as exc:
                    failed.append(repr(exc))
                await asyncio.sleep(CALL_EVERY)

        load = asyncio.create_task(call_all_along())
        code, out = await cellwork(
            "restart", "echo", "--rolling", "--state-dir", str(cell.state_dir)
        )
        calling = False
        await load
        assert code == 0, out + cell.log_tail()
        steps = [
            "started echo-0-g1 to replace echo-0",
            "echo-0-g1 is SERVING; draining echo-0",
            "echo-0 stopped",
            "started echo-1-g1 to replace echo-1",
            "echo-1-g1 is SERVING; draining echo-1",
            "echo-1 stopped",
            "done: 2 instances of echo replaced",
        ]
        assert [line.strip() for line in out.splitlines() if line.strip()] == steps

        assert failed == []
        assert {"echo-0", "echo-1", "echo-0-g1", "echo-1-g1"} <= set(answered)
        for instance in ("echo-0", "echo-1"):
            assert history.seen[instance] == ["SERVING", "DRAINING", "GONE"], history.seen
            assert not psutil.pid_exists(old[instance]) or (
                psutil.Process(old[instance]).status() == psutil.STATUS_ZOMBIE
            )
        # One at a time, each old instance draining only once its successor serves.
        at = history.order.index
        assert at("echo-0-g1 SERVING") < at("echo-0 DRAINING") < at("echo-0 GONE")
        assert at("echo-0 GONE") < at("echo-1-g1 SERVING") < at("echo-1 DRAINING")
        assert at("echo-1 DRAINING") < at("echo-1 GONE")
        rows = await asyncio.to_thread(cell.instances)
        assert [(r["id"], r["status"], r["restarts"]) for r in rows] == [
            ("echo-0-g1", "SERVING", 0),
            ("echo-1-g1", "SERVING", 0),
        ]

        code, out = await cellwork("restart", "echo", "--state-dir", str(cell.state_dir))
        assert code == 2 and "say --rolling" in out, out
        code, out = await cellwork(
            "restart", "nope", "--rolling", "--state-dir", str(cell.state_dir)
        )
        assert code == 1 and "unknown service 'nope'" in out and "Traceback" not in out, out
    finally:
        await caller.drain(1)
        await watcher.close()
        await nc.close()
        await asyncio.to_thread(cell.stop)
