"""Catalog slow or gone: feed pages come back with bare items and /v1/home names them in
``partial``, within its deadline; full pages again once the catalog answers. Through the
real gateway (item cache off) and services on the test's nats-server, the catalog
reached through a link that can make it slow."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace

import pytest

from cellwork import Internal, Service, ServiceSettings
from cellwork.discovery.registry import Registration, Registry
from cellwork.rpc.client import connect_client
from cellwork.testing import start_service
from learnfeed.catalog.demo import demo_catalog
from learnfeed.catalog.service import create_service as create_catalog
from learnfeed.feed.service import create_service as create_feed
from learnfeed.gateway.items import Items
from learnfeed.v1 import catalog_pb2, catalog_pb2_grpc
from learnfeed.v1.catalog_client import CatalogClient
from tests.integration.learnfeed.gateway.gateway_cell import (
    Cell,
    bearer,
    gateway_of,
    parts_ready,
    put_version,
    sample,
)
from tests.waiting import wait_until


class SlowLink:
    """A TCP link to a server that hands it what the client sends ``delay`` seconds late:
    the server looks slow, the way a frozen or overloaded one does. Answers go back at
    once. A new ``delay`` applies to what is still in the link."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._delay = 0.0
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def delay(self) -> float:
        return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        self._delay = seconds
        # Whatever waits on the old delay looks again.
        self._changed.set()
        self._changed = asyncio.Event()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        for task in (
            asyncio.create_task(self._pipe(client_r, server_w, late=True)),
            asyncio.create_task(self._pipe(server_r, client_w, late=False)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, late: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await source.read(65536):
                arrived = loop.time()
                while late and (wait := arrived + self._delay - loop.time()) > 0:
                    changed = self._changed
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), wait)
                sink.write(data)
                await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def put_behind_a_link(catalog: Service, registry: Registry) -> tuple[SlowLink, Registration]:
    """Publish the catalog in the registry at the address of a link in front of it, in
    place of its own: every client reaches it through the link from now on."""
    link = SlowLink(catalog.info.host, catalog.info.grpc_port)
    port = await link.start()
    assert catalog.registration is not None
    await catalog.registration.close()  # its record goes; its server stays
    via_link = Registration(
        registry, replace(catalog.info, instance_id="catalog-behind-link", grpc_port=port), 1.0
    )
    await via_link.start()
    return link, via_link


async def test_catalog_slow_or_gone_feed_pages_come_back_bare_and_home_names_the_items(
    tmp_path, nats_server, registry
) -> None:
    cell = Cell(nats_server.url, state_dir=tmp_path, refresh_window=3600.0)
    link: SlowLink | None = None
    try:
        catalog = await cell.start(create_catalog)
        feed = await cell.start(create_feed)
        link, via_link = await put_behind_a_link(catalog, registry)
        # The item cache off: every page asks the catalog, nothing is held to hide it.
        _gateway, http = await gateway_of(cell, gateway_items_cache=False)
        items = [item.id for item in demo_catalog()[1][:20]]
        await put_version(feed, "reader", items)
        reader = bearer("reader")

        async def enriched() -> bool:
            answer = await http.get("/v1/feed?limit=10", headers=reader)
            return answer.status_code == 200 and all("title" in i for i in answer.json()["items"])

        await wait_until(enriched, "the gateway to serve enriched pages through the link")
        full_answer = await http.get("/v1/feed?limit=10", headers=reader)
        full = full_answer.json()

        link.delay = 5.0  # far past the enrichment deadline (0.2 s) and /v1/home's (0.3 s)
        before = sample("learnfeed_gateway_unenriched_pages_total", reason="deadline_exceeded")
        for _ in range(3):
            started = time.monotonic()
            page = await http.get("/v1/feed?limit=10", headers=reader)
            home = await http.get("/v1/home", headers=reader)
            # Neither waited for the catalog: that takes the link's 5 s.
            assert time.monotonic() - started < link.delay
            assert page.status_code == 200, page.text
            bare = page.json()["items"]
            assert [(i["id"], i["score"]) for i in bare] == [
                (i["id"], i["score"]) for i in full["items"]
            ]
            assert all(set(i) == {"id", "score"} for i in bare)
            assert page.headers["ETag"] != full_answer.headers["ETag"]  # another answer
            assert home.status_code == 200, home.text
            assert "items" in home.json()["partial"] and "feed" not in home.json()["partial"]
            assert [i["id"] for i in home.json()["feed"]["items"]] == items[:5]
        after = sample("learnfeed_gateway_unenriched_pages_total", reason="deadline_exceeded")
        assert after >= before + 6

        link.delay = 0.0
        await wait_until(enriched, "full pages again once the catalog answers in time")

        async def home_is_whole() -> bool:
            home = await http.get("/v1/home", headers=reader)
            return home.status_code == 200 and "items" not in home.json()["partial"]

        await wait_until(home_is_whole, "/v1/home to name no items once the catalog answers")

        # The catalog gone (no instance in the registry): bare pages at once.
        await via_link.close()

        async def catalog_gone() -> bool:
            return not (await parts_ready(http))["catalog"]

        await wait_until(catalog_gone, "the gateway to see no catalog instance")
        gone_before = sample("learnfeed_gateway_unenriched_pages_total", reason="unavailable")
        page = await http.get("/v1/feed?limit=10", headers=reader)
        assert page.status_code == 200, page.text
        assert [i["id"] for i in page.json()["items"]] == items[:10]
        assert all("title" not in i for i in page.json()["items"])
        gone_after = sample("learnfeed_gateway_unenriched_pages_total", reason="unavailable")
        assert gone_after == gone_before + 1

        # The document says so: title and educator (and what else only the catalog
        # knows) are optional in a feed entry; id and score are not.
        entry = (await http.get("/openapi.json")).json()["components"]["schemas"]["FeedEntry"]
        assert sorted(entry["required"]) == ["id", "score"]
        assert entry["properties"]["title"]["type"] == "string"
        assert "default" not in entry["properties"]["title"]
        assert "educator" in entry["properties"]
        await http.aclose()
    finally:
        if link is not None:
            await link.close()
        await cell.close()


async def test_with_the_item_cache_off_a_catalog_past_the_deadline_opens_its_breaker(
    tmp_path, nats_server, registry
) -> None:
    cell = Cell(nats_server.url, state_dir=tmp_path, refresh_window=3600.0)
    link: SlowLink | None = None
    try:
        catalog = await cell.start(create_catalog)
        feed = await cell.start(create_feed)
        link, _via_link = await put_behind_a_link(catalog, registry)
        _gateway, http = await gateway_of(cell, gateway_items_cache=False)
        items = [item.id for item in demo_catalog()[1][:20]]
        await put_version(feed, "breaker-reader", items)
        reader = bearer("breaker-reader")

        async def enriched() -> bool:
            answer = await http.get("/v1/feed?limit=10", headers=reader)
            return answer.status_code == 200 and all("title" in i for i in answer.json()["items"])

        await wait_until(enriched, "the gateway to serve enriched pages through the link")
        opened = sample("cellwork_breaker_transitions_total", service="catalog", state="open")
        link.delay = 5.0  # far past the enrichment deadline (0.2 s)

        async def breaker_opened() -> bool:
            pages = await asyncio.gather(
                *(http.get("/v1/feed?limit=10", headers=reader) for _ in range(4))
            )
            for page in pages:  # every page answered, bare, while the breaker learns
                assert page.status_code == 200, page.text
                assert all("title" not in i for i in page.json()["items"])
            now = sample("cellwork_breaker_transitions_total", service="catalog", state="open")
            return now > opened

        # The calls end as DEADLINE_EXCEEDED, which the breaker counts (>= 20 calls,
        # >= 50 % failed); cut off by a timer as cancellations, they counted for nothing.
        await wait_until(breaker_opened, "the catalog's breaker to open")
        refused = sample("learnfeed_gateway_unenriched_pages_total", reason="unavailable")
        started = time.monotonic()
        page = await http.get("/v1/feed?limit=10", headers=reader)
        assert page.status_code == 200, page.text
        assert all("title" not in i for i in page.json()["items"])
        assert time.monotonic() - started < link.delay
        # Refused by the open breaker at once, not waited for.
        assert sample("learnfeed_gateway_unenriched_pages_total", reason="unavailable") > refused
        await http.aclose()
    finally:
        if link is not None:
            await link.close()
        await cell.close()


BROKEN = "broken-item"


class HeldCatalog(catalog_pb2_grpc.CatalogServicer):
    """A catalog whose GetItems holds every chunk until its caller gives up, except the
    one asking for BROKEN: that one fails, once the other chunks are held."""

    def __init__(self, others: int) -> None:
        self.held = 0
        self.cancelled = 0
        self._others = others
        self._all_held = asyncio.Event()

    async def GetItems(self, request: catalog_pb2.GetItemsRequest, context) -> None:
        if BROKEN in request.ids:
            await self._all_held.wait()
            raise Internal("this chunk is broken")
        self.held += 1
        if self.held == self._others:
            self._all_held.set()
        try:
            await asyncio.Event().wait()  # until the call is cancelled
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_when_one_chunk_fails_the_others_are_cancelled_not_left_running(
    nats_server, registry
) -> None:
    servicer = HeldCatalog(others=2)

    def create(settings: ServiceSettings) -> Service:
        service = Service("catalog", settings)
        service.add_grpc(
            catalog_pb2_grpc.add_CatalogServicer_to_server, servicer, CatalogClient.SERVICE
        )
        return service

    catalog = await start_service(create, nats_server.url, instance_id="held-catalog")
    client = await connect_client(registry, "catalog", CatalogClient, caller="gateway")
    items = Items(client, ttl=60.0, keep=False, load_timeout=60.0)
    try:
        await client.balancer.wait_for_endpoints(1)
        ids = [f"item-{n}" for n in range(30)]
        ids[15] = BROKEN  # the second of three chunks
        with pytest.raises(Internal):
            await items.get(ids)
        assert servicer.held == 2
        # Its siblings were cancelled with it, not left waiting out their 60 s.
        await wait_until(lambda: servicer.cancelled == 2, "the other chunks to be cancelled")
    finally:
        await items.close()
        await client.close()
        await catalog.drain(1)
