"""docker compose file and the nginx edge, checked with the real tools."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
import yaml

from cellwork.testing import CellProcess, free_port

from .conftest import DEPLOY, REPO

CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def test_compose_file_matches_the_compose_specification() -> None:
    out = subprocess.run(
        [
            str(CHECK_JSONSCHEMA),
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "compose/compose.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_runs_every_service_of_the_demo_cell_with_its_module_and_replicas() -> None:
    cell = yaml.safe_load((REPO / "src/learnfeed/cell.yaml").read_text())["services"]
    compose = yaml.safe_load((DEPLOY / "compose/compose.yaml").read_text())["services"]
    for name, spec in cell.items():
        assert name in compose, name
        assert compose[name]["command"] == ["serve", spec["module"]]
        assert compose[name]["deploy"]["replicas"] == spec.get("replicas", 1)
        assert compose[name]["healthcheck"]["test"] == ["CMD", "cellwork", "probe"]
    nats = compose["nats"]
    conf = (DEPLOY / "compose/nats.conf").read_text()
    assert "sync_interval: always" in conf and "store_dir: /data" in conf
    assert any(v.endswith(":/data") for v in nats["volumes"])
    assert compose["edge"]["ports"] == ["8080:8080", "8081:8081"]
    assert set(compose["postgres"]["profiles"]) == {"postgres"}


def _nginx_prefix(tmp: Path, gateways: list[int], pushes: list[int], http: int, ws: int) -> Path:
    """The shipped nginx.conf, listening on test ports, in front of loopback instances."""
    conf = (DEPLOY / "nginx/nginx.conf").read_text()
    conf = conf.replace("listen 8080 ", f"listen 127.0.0.1:{http} ").replace(
        "listen 8081 ", f"listen 127.0.0.1:{ws} "
    )
    conf = conf.replace("pid /tmp/cellwork-nginx.pid;", f"pid {tmp}/nginx.pid;")
    upstreams = "\n".join(
        [
            "upstream cellwork_gateway {",
            "    zone cellwork_gateway 64k;",
            *(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in gateways),
            "    keepalive 64;",
            "}",
            "upstream cellwork_push {",
            "    zone cellwork_push 64k;",
            *(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in pushes),
            "    keepalive 16;",
            "}",
        ]
    )
    (tmp / "nginx.conf").write_text(conf)
    (tmp / "upstreams.conf").write_text(upstreams)
    (tmp / "logs").mkdir(exist_ok=True)
    return tmp / "nginx.conf"


@pytest.fixture(scope="module")
def nginx() -> str:
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(path).exists():
        pytest.skip("nginx is not installed")
    return path


def test_nginx_accepts_the_shipped_config(nginx: str, tmp_path: Path) -> None:
    # Only the upstream addresses change: "gateway" and "push" resolve inside compose only.
    shutil.copy(DEPLOY / "nginx/nginx.conf", tmp_path / "nginx.conf")
    (tmp_path / "upstreams.conf").write_text(
        (DEPLOY / "nginx/upstreams.conf")
        .read_text()
        .replace("gateway:8080", "127.0.0.1:18080")
        .replace("push:8081", "127.0.0.1:18081")
    )
    (tmp_path / "logs").mkdir()
    out = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr


def _serve(module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cellwork", "serve", module],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} never became ready")


@dataclass
class Edge:
    http: int
    ws: int
    gateways: list[subprocess.Popen[bytes]]


@pytest.fixture
def edge(nginx: str, tmp_path: Path) -> Iterator[Edge]:
    """The cell's back services, two gateway and two push instances, nginx in front."""
    spec = yaml.safe_load((REPO / "src/learnfeed/cell.yaml").read_text())
    spec["name"] = "edge"
    for name, service in spec["services"].items():
        service["replicas"] = 0 if name in ("gateway", "push") else 1
    cell = CellProcess(spec, tmp_path / "cell").start()
    processes: list[subprocess.Popen[bytes]] = []
    proxy = None
    try:
        common = {
            "CELLWORK_NATS_URL": cell.nats_url(),
            "CELLWORK_STATE_DIR": str(cell.state_dir),
            "CELLWORK_DEMO": "1",
        }
        ports = {"gateway": [free_port(), free_port()], "push": [free_port(), free_port()]}
        for service, service_ports in ports.items():
            for n, port in enumerate(service_ports):
                env = {
                    **common,
                    "CELLWORK_SERVICE": service,
                    "CELLWORK_INSTANCE_ID": f"{service}-{n}",
                    f"CELLWORK_{service.upper()}_PORT": str(port),
                }
                processes.append(_serve(f"learnfeed.{service}", env))
        for port in ports["gateway"] + ports["push"]:
            _ready(f"http://127.0.0.1:{port}/readyz", 60)
        http, ws = free_port(), free_port()
        conf = _nginx_prefix(tmp_path, ports["gateway"], ports["push"], http, ws)
        proxy = subprocess.Popen(
            [nginx, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _ready(f"http://127.0.0.1:{http}/healthz", 10)
        yield Edge(http, ws, processes[:2])
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            process.wait(15)
        cell.stop()


async def test_nginx_balances_gateways_and_push_and_survives_a_stopped_gateway(
    edge: Edge,
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http}", timeout=10) as client:
        r = await client.post(
            "/v1/auth/signup",
            json={
                "email": f"edge-{os.urandom(3).hex()}@example.org",
                "password": "correct horse",
                "name": "Edge",
            },
        )
        assert r.status_code == 201, r.text
        token = r.json()["access_token"]
        auth = {"Authorization": f"Bearer {token}", "X-Request-Id": "edge-test-42"}
        # a WebSocket through the edge receives feed.ready for the read below
        url = f"ws://127.0.0.1:{edge.ws}/v1/stream?access_token={token}"
        async with websockets.connect(url) as sock:
            first = await client.get("/v1/feed", headers=auth)
            assert first.status_code == 200
            assert first.headers["x-request-id"] == "edge-test-42"
            frame = json.loads(await asyncio.wait_for(sock.recv(), 15))
            assert frame["type"] == "feed.ready" and frame["version"] >= 1
        # a body over 64 KB stops at the edge
        big = await client.post(
            "/v1/auth/login", content=b"x" * 70_000, headers={"content-type": "application/json"}
        )
        assert big.status_code == 413
        # one gateway goes away: every read still succeeds through the other
        edge.gateways[0].send_signal(signal.SIGTERM)
        await asyncio.to_thread(edge.gateways[0].wait, 15)
        statuses = [(await client.get("/v1/feed", headers=auth)).status_code for _ in range(30)]
        assert statuses == [200] * 30
