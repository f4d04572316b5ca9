"""push's readiness while NATS is away: degraded, named, and still ready."""

from __future__ import annotations

from pathlib import Path

import httpx

from cellwork.testing import NatsServer, free_port, start_service
from learnfeed.push.service import create_service
from learnfeed.settings import LearnfeedSettings
from tests.waiting import wait_until

KEY = "k1:" + "push-readiness-key-" * 3


async def test_readyz_stays_200_and_names_nats_as_degraded_while_it_is_down(tmp_path: Path):
    server = NatsServer(tmp_path / "nats", port=free_port()).start()
    port = free_port()
    push = await start_service(
        create_service, server.url, settings_class=LearnfeedSettings, push_port=port, jwt_keys=KEY
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            r = await http.get("/readyz")
            assert r.status_code == 200
            assert r.json() == {"ready": True, "parts": {"serving": True}, "degraded": []}

            server.stop()

            async def degraded() -> list[str]:
                r = await http.get("/readyz")
                assert r.status_code == 200 and r.json()["ready"] is True
                return list(r.json()["degraded"])

            async def nats_degraded() -> bool:
                return "nats" in await degraded()

            await wait_until(nats_degraded, "/readyz to name nats as degraded")
            assert set(await degraded()) == {"nats", "registry"}
            metrics = (await http.get("/metrics")).text
            assert 'cellwork_dependency_up{dependency="nats"} 0.0' in metrics

            server.start()

            async def healed() -> bool:
                return await degraded() == []

            await wait_until(healed, "/readyz to name nothing degraded")
    finally:
        await push.drain(1)
        server.stop()
