"""The supervisor's shell on a real nats-server, with fake instance processes: the
registry it opens and follows is the one the cell's settings name."""

import asyncio
import os
import signal

import pytest
from nats.js.errors import BucketNotFoundError

from cellwork.discovery.instance import InstanceInfo
from cellwork.discovery.registry import Registry
from cellwork.discovery.watcher import RegistryWatcher
from cellwork.events.connection import connect_nats
from cellwork.runtime.cellfile import CellSpec
from cellwork.runtime.events import SignalReceived
from cellwork.runtime.supervisor import Supervisor
from tests.fakes import FakeProcesses


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
