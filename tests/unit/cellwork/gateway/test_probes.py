"""The probe routes: liveness, readiness by parts, Prometheus text."""

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from cellwork.gateway import probe_routes


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")


async def test_healthz_answers_ok() -> None:
    async with client(Starlette(routes=probe_routes())) as http:
        r = await http.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("parts", "status"),
    [
        ({"feed": True, "catalog": True}, 200),
        ({"feed": True, "catalog": False}, 503),
        ({}, 200),
    ],
)
async def test_readyz_is_503_when_any_part_is_not_ready(parts, status) -> None:
    async with client(Starlette(routes=probe_routes(lambda: parts))) as http:
        r = await http.get("/readyz")
    assert r.status_code == status
    assert r.json() == {"ready": status == 200, "parts": parts, "degraded": []}


async def test_a_degraded_dependency_is_named_and_fails_no_probe() -> None:
    usable = {"nats": False, "registry": True}
    app = Starlette(routes=probe_routes(lambda: {"serving": True}, dependencies=lambda: usable))
    async with client(app) as http:
        r = await http.get("/readyz")
        assert r.status_code == 200
        assert r.json() == {"ready": True, "parts": {"serving": True}, "degraded": ["nats"]}
        usable["nats"] = True
        assert (await http.get("/readyz")).json()["degraded"] == []


async def test_a_part_that_cannot_serve_fails_readiness_whatever_the_dependencies() -> None:
    routes = probe_routes(lambda: {"serving": False}, dependencies=lambda: {"nats": True})
    async with client(Starlette(routes=routes)) as http:
        r = await http.get("/readyz")
    assert r.status_code == 503 and r.json()["ready"] is False


async def test_readyz_follows_readiness_as_it_changes_and_accepts_an_async_check() -> None:
    state = {"nats": False}

    async def ready() -> dict[str, bool]:
        return dict(state)

    async with client(Starlette(routes=probe_routes(ready))) as http:
        assert (await http.get("/readyz")).status_code == 503
        state["nats"] = True
        assert (await http.get("/readyz")).status_code == 200


async def test_readyz_without_a_check_is_ready() -> None:
    async with client(Starlette(routes=probe_routes())) as http:
        r = await http.get("/readyz")
    assert r.status_code == 200 and r.json() == {"ready": True, "parts": {}, "degraded": []}


async def test_metrics_serves_the_registry_as_prometheus_text() -> None:
    registry = CollectorRegistry()
    Counter("probe_test_things", "Things counted.", registry=registry).inc(3)
    async with client(Starlette(routes=probe_routes(registry=registry))) as http:
        r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert families["probe_test_things"].samples[0].value == 3


async def test_metrics_serves_the_process_registry_by_default() -> None:
    async with client(Starlette(routes=probe_routes())) as http:
        r = await http.get("/metrics")
    assert "process_resident_memory_bytes" in r.text


async def test_probe_routes_serve_a_fastapi_app_and_stay_out_of_its_openapi() -> None:
    app = FastAPI(routes=probe_routes(lambda: {"db": False}))
    async with client(app) as http:
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200
    assert not set(app.openapi()["paths"]) & {"/healthz", "/readyz", "/metrics"}
