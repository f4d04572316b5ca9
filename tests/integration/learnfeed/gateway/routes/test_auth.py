"""Identity gone: sign-up, login and refresh answer 503 at once (no instance, or one
that refuses connections), while feed reads go on: tokens are checked in the gateway."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx
from prometheus_client import REGISTRY

from cellwork.discovery.registry import Registration
from cellwork.testing import free_port
from learnfeed.catalog.service import create_service as create_catalog
from learnfeed.feed.service import create_service as create_feed
from learnfeed.identity.service import create_service as create_identity
from tests.integration.learnfeed.gateway.gateway_cell import (
    CALL_TIMEOUT,
    Cell,
    gateway_of,
    parts_ready,
)
from tests.waiting import wait_until


async def test_identity_gone_auth_answers_503_at_once_while_feed_reads_go_on(
    tmp_path, nats_server, registry
) -> None:
    cell = Cell(nats_server.url, state_dir=tmp_path)
    try:
        identity = await cell.start(create_identity)
        await cell.start(create_catalog)
        await cell.start(create_feed)
        _gateway, http = await gateway_of(cell)
        credentials = {"email": "learner@example.org", "password": "correct horse"}

        async def signed_up() -> bool:
            answer = await http.post("/v1/auth/signup", json={**credentials, "name": "L"})
            return answer.status_code == 201

        await wait_until(signed_up, "the gateway to sign a user up")
        tokens = (await http.post("/v1/auth/login", json=credentials)).json()
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}

        # The feed path never calls identity: the token is checked in the gateway.
        calls = sample_identity_calls()
        for _ in range(5):
            assert (await http.get("/v1/feed", headers=auth)).status_code == 200
        assert sample_identity_calls() == calls

        record = identity.info
        await cell.stop(identity)
        # First with a record left behind by an instance that died (nothing listens at
        # its address), then with none: 503 at once both times, never the deadline.
        dead = Registration(
            registry,
            replace(record, instance_id="identity-dead", grpc_port=free_port()),
            1.0,
        )
        await dead.start()
        try:

            async def dead_record_seen() -> bool:
                return (await parts_ready(http))["identity"]

            await wait_until(dead_record_seen, "the gateway to see the dead instance's record")
            await refused_at_once(http, credentials, tokens["refresh_token"])
        finally:
            await dead.close()

        async def identity_gone() -> bool:
            return not (await parts_ready(http))["identity"]

        await wait_until(identity_gone, "the gateway to see no identity instance")
        await refused_at_once(http, credentials, tokens["refresh_token"])

        for _ in range(3):
            read = await http.get("/v1/feed", headers=auth)
            assert read.status_code == 200, read.text
            assert read.json()["items"]
        home = await http.get("/v1/home", headers=auth)
        assert home.status_code == 200, home.text
        assert sorted(home.json()["partial"]) == ["follows", "profile"]
        assert home.json()["feed"]["items"]
        await http.aclose()
    finally:
        await cell.close()


async def refused_at_once(
    http: httpx.AsyncClient, credentials: dict[str, str], refresh_token: str
) -> None:
    for path, body in (
        ("/v1/auth/login", credentials),
        ("/v1/auth/signup", {**credentials, "email": "other@example.org", "name": "O"}),
        ("/v1/auth/refresh", {"refresh_token": refresh_token}),
    ):
        started = time.monotonic()
        answer = await http.post(path, json=body)
        assert answer.status_code == 503, (path, answer.text)
        assert answer.json()["error"]["code"] == "unavailable"
        assert time.monotonic() - started < CALL_TIMEOUT / 2, path


def sample_identity_calls() -> float:
    """Calls made to identity from this process, whatever their method and outcome."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name == "cellwork_rpc_client_requests_total"
        and sample.labels.get("service") == "identity"
    )
