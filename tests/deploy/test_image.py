"""The one image, built and run for real against a nats-server on the host's loopback."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from cellwork.config.settings import ServiceSettings
from cellwork.discovery.registry import Registry
from cellwork.events.connection import connect_nats
from cellwork.runtime.health import HealthProbe
from cellwork.testing import free_port

from .conftest import Engine

# The first test here builds the image (a session fixture): a build whose dependency layer
# is not cached takes minutes, far past the default per-test timeout.
pytestmark = pytest.mark.timeout(1500)


async def _watch_registry(registry: Registry, service: str, present: bool, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = {}
        try:
            for key in await registry.kv.keys():
                if key.startswith(f"{service}."):
                    entry = await registry.kv.get(key)
                    entries[key] = json.loads(entry.value)
        except Exception:  # no keys yet
            pass
        if bool(entries) == present:
            return entries
        await asyncio.sleep(0.2)
    raise AssertionError(f"{service} {'never registered' if present else 'never deregistered'}")


async def test_a_service_from_the_image_registers_serves_and_drains(
    engine: Engine, image: str, nats_server
) -> None:
    grpc_port, metrics_port = free_port(), free_port()
    name = f"cellwork-test-{uuid.uuid4().hex[:8]}"
    engine.run(
        "run",
        "-d",
        "--name",
        name,
        "--network=host",
        "-e",
        f"CELLWORK_NATS_URL={nats_server.url}",
        "-e",
        "CELLWORK_HOST=127.0.0.1",
        "-e",
        f"CELLWORK_GRPC_PORT={grpc_port}",
        "-e",
        f"CELLWORK_METRICS_PORT={metrics_port}",
        "-e",
        "CELLWORK_DRAIN_TIMEOUT=5",
        image,
        "serve",
        "learnfeed.catalog",
    )
    nc = await connect_nats(nats_server.url, name="test-image")
    try:
        defaults = ServiceSettings()  # what the image's instance reads: nothing overrides it
        registry = await Registry.open(nc, defaults.registry_bucket, defaults.registry_ttl)
        entries = await _watch_registry(registry, "catalog", present=True, timeout=60)
        (record,) = entries.values()
        assert record["grpc_port"] == grpc_port and record["status"] == "SERVING"

        probe = HealthProbe(timeout=2)
        try:
            assert await probe.check(f"127.0.0.1:{grpc_port}")
        finally:
            await probe.close()
        assert engine.run("exec", name, "id", "-u").stdout.strip() == "10001"
        assert engine.run("exec", name, "cellwork", "probe").returncode == 0

        started = time.monotonic()
        engine.run("stop", "-t", "10", name, timeout=60)
        stopped_in = time.monotonic() - started
        assert stopped_in < 10, "SIGTERM did not stop it within its grace period"
        state = engine.run("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert state == "0"
        logs = engine.run("logs", name).stdout + engine.run("logs", name).stderr
        assert "registry.deregistered" in logs and "service.drained" in logs
        await _watch_registry(registry, "catalog", present=False, timeout=5)
    finally:
        engine.run("rm", "-f", name, check=False)
        await nc.close()


def test_the_image_is_labelled_and_runs_as_a_non_root_user(engine: Engine, image: str) -> None:
    info = json.loads(engine.run("image", "inspect", image).stdout)[0]
    config = info.get("Config") or info.get("config", {})
    labels = config.get("Labels") or {}
    assert labels["org.opencontainers.image.title"] == "cellwork"
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["cellwork"]
    health = info.get("Healthcheck") or config.get("Healthcheck")  # podman / docker
    assert health["Test"] == ["CMD", "cellwork", "probe"]
    size_mb = int(info.get("Size") or info.get("VirtualSize")) / 1e6
    print(f"image size: {size_mb:.0f} MB")
    assert size_mb < 800


@pytest.mark.parametrize("module", ["learnfeed.gateway", "learnfeed.push", "learnfeed.recommender"])
def test_every_service_module_loads_in_the_image(engine: Engine, image: str, module: str) -> None:
    # As `cellwork serve` finds it: in the package or in its .service module.
    code = f"from cellwork.runtime.serve import load_factory; load_factory({module!r})"
    out = engine.run(
        "run", "--rm", "--network=host", "--entrypoint", "python3", image, "-c", code, check=False
    )
    assert out.returncode == 0, out.stderr
