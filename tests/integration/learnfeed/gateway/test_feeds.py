"""Feed gone: a user gets the page they were last served, marked stale, through the real
gateway and services on the test's nats-server, with the gateway's feed copies off."""

from __future__ import annotations

import time

from learnfeed.catalog.demo import demo_catalog
from learnfeed.catalog.service import create_service as create_catalog
from learnfeed.feed.service import create_service as create_feed
from learnfeed.gateway.cursors import encode_cursor
from tests.integration.learnfeed.gateway.gateway_cell import (
    CALL_TIMEOUT,
    Cell,
    bearer,
    gateway_of,
    put_version,
    sample,
)
from tests.waiting import wait_until


async def test_feed_gone_a_user_gets_the_last_feed_they_were_served_marked_stale(
    tmp_path, nats_server
) -> None:
    cell = Cell(nats_server.url, state_dir=tmp_path, refresh_window=3600.0)
    try:
        await cell.start(create_catalog)
        feed = await cell.start(create_feed)
        # The gateway's current-version copies off: the last feeds are kept apart from them.
        _gateway, http = await gateway_of(cell, gateway_feed_cache=False)
        items = [item.id for item in demo_catalog()[1][:30]]
        assert await put_version(feed, "reader", items) == 1
        reader = bearer("reader")

        async def served() -> bool:
            return (await http.get("/v1/feed?limit=10", headers=reader)).status_code == 200

        await wait_until(served, "the gateway to serve the feed")
        first = (await http.get("/v1/feed?limit=10", headers=reader)).json()
        second = (
            await http.get(f"/v1/feed?limit=10&cursor={first['next_cursor']}", headers=reader)
        ).json()
        assert (first["version"], first["stale"]) == (1, False)
        assert [i["id"] for i in first["items"] + second["items"]] == items[:20]

        await cell.stop(feed)
        before = sample("learnfeed_gateway_stale_feeds_total", reason="unavailable")
        again = await http.get("/v1/feed?limit=10", headers=reader)
        assert again.status_code == 200, again.text
        body = again.json()
        assert (body["version"], body["stale"]) == (1, True)
        assert body["items"] == first["items"]  # the same items, enriched as before
        assert body["next_cursor"] == first["next_cursor"]
        turned = await http.get(f"/v1/feed?limit=10&cursor={body['next_cursor']}", headers=reader)
        assert turned.status_code == 200 and turned.json()["items"] == second["items"]
        home = (await http.get("/v1/home", headers=reader)).json()
        assert home["feed"]["stale"] is True and "feed" not in home["partial"]
        assert home["feed"]["items"] == first["items"][:5]
        after = sample("learnfeed_gateway_stale_feeds_total", reason="unavailable")
        assert after == before + 3

        # Nothing known of this user, or of this page: the error stands, at once.
        for who, path in (
            ("newcomer", "/v1/feed"),
            ("reader", f"/v1/feed?limit=10&cursor={encode_cursor(1, 20)}"),
        ):
            started = time.monotonic()
            refused = await http.get(path, headers=bearer(who))
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "unavailable"
            assert time.monotonic() - started < CALL_TIMEOUT / 2
        await http.aclose()
    finally:
        await cell.close()
