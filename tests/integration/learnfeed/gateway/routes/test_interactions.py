"""POST /v1/interactions through a real gateway, catalog and nats-server: 202 once the
stream has the event; while NATS is down a quick 503 with Retry-After, never a 202."""

from __future__ import annotations

import time

import httpx

from cellwork.testing import free_port, start_service
from learnfeed.catalog.demo import demo_catalog
from learnfeed.catalog.service import create_service as create_catalog
from learnfeed.gateway.service import create_service as create_gateway
from learnfeed.settings import LearnfeedSettings
from tests.waiting import wait_until


async def test_an_interaction_while_nats_is_down_is_refused_quickly_with_retry_after(
    tmp_path, nats_server
) -> None:
    port = free_port()
    common = {"settings_class": LearnfeedSettings, "state_dir": tmp_path, "demo": True}
    catalog = await start_service(create_catalog, nats_server.url, **common)
    gateway = await start_service(create_gateway, nats_server.url, gateway_port=port, **common)
    token = LearnfeedSettings(demo=True).jwt().issue("u1")
    item = demo_catalog()[1][0].id
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        try:

            async def item_is_known() -> bool:
                return (await http.get(f"/v1/items/{item}", headers=headers)).status_code == 200

            await wait_until(item_is_known, "the gateway to find the seeded item")
            body = {"item_id": item, "kind": "like"}
            assert (
                await http.post("/v1/interactions", json=body, headers=headers)
            ).status_code == 202

            nats_server.stop()
            await wait_until(
                lambda: not gateway.publisher.connected, "the gateway to see the outage"
            )
            answers = []
            for _ in range(3):
                started = time.monotonic()
                answer = await http.post("/v1/interactions", json=body, headers=headers)
                answers.append((answer, time.monotonic() - started))
            for answer, seconds in answers:
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "unavailable"
                assert int(answer.headers["Retry-After"]) >= 1
                assert seconds < 3  # the publish timeout is 5 s: it did not wait for it

            nats_server.start()

            async def accepted_again() -> bool:
                again = await http.post("/v1/interactions", json=body, headers=headers)
                return again.status_code == 202

            await wait_until(accepted_again, "interactions to be accepted after the outage")
        finally:
            await gateway.drain(1)
            await catalog.drain(1)
