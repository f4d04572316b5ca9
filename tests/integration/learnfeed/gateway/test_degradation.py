"""A gateway whose upstreams fail keeps answering, through the real gateway app and real
services on the test's nats-server: feed gone, the last feed each user was served
(stale); catalog slow or gone, bare items and ``partial``; identity gone, a 503 at once
on the auth routes while feed reads go on."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace

import httpx
from grpc import aio
from prometheus_client import REGISTRY

from cellwork import Service, ServiceSettings
from cellwork.discovery.registry import Registration, Registry
from cellwork.testing import free_port, start_service
from learnfeed.catalog.demo import demo_catalog
from learnfeed.catalog.service import create_service as create_catalog
from learnfeed.feed.service import create_service as create_feed
from learnfeed.gateway.cursors import encode_cursor
from learnfeed.gateway.service import create_service as create_gateway
from learnfeed.identity.service import create_service as create_identity
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1 import feed_pb2, feed_pb2_grpc
from tests.waiting import wait_until

# Far above what any answer here should take: an answer that waited for a failed part
# until the request's deadline takes this long, one that did not takes well under it.
CALL_TIMEOUT = 10.0


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def put_version(feed: Service, user_id: str, item_ids: list[str]) -> int:
    """Store a ranked version for ``user_id`` straight on the feed instance."""
    async with aio.insecure_channel(feed.info.address) as channel:
        stub = feed_pb2_grpc.FeedStub(channel)
        reply = await stub.PutFeed(
            feed_pb2.PutFeedRequest(
                user_id=user_id,
                items=[
                    feed_pb2.FeedItem(item_id=item_id, score=1.0 - n / 64)
                    for n, item_id in enumerate(item_ids)
                ],
            )
        )
    return int(reply.version)


class Cell:
    """Services of one test, started in order and drained in reverse."""

    def __init__(self, nats_url: str, **settings: object) -> None:
        self.nats_url = nats_url
        self.settings = {"settings_class": LearnfeedSettings, "demo": True, **settings}
        self.services: list[Service] = []

    async def start(
        self, factory: Callable[[ServiceSettings], Service], **settings: object
    ) -> Service:
        service = await start_service(factory, self.nats_url, **{**self.settings, **settings})
        self.services.append(service)
        return service

    async def stop(self, service: Service) -> None:
        self.services.remove(service)
        await service.drain(1)

    async def close(self) -> None:
        for service in reversed(self.services):
            await service.drain(1)


async def gateway_of(cell: Cell, **settings: object) -> tuple[Service, httpx.AsyncClient]:
    port = free_port()
    gateway = await cell.start(
        create_gateway, gateway_port=port, call_timeout=CALL_TIMEOUT, **settings
    )
    return gateway, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)


def bearer(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {LearnfeedSettings(demo=True).jwt().issue(user_id)}"}


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


async def parts_ready(http: httpx.AsyncClient) -> dict[str, bool]:
    parts: dict[str, bool] = (await http.get("/readyz")).json()["parts"]
    return parts


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
