"""learnfeed end to end: the real cell (real nats-server, every service a process),
driven through the public HTTP and WebSocket doors."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import nats
import pytest
import websockets
import yaml

from cellwork.runtime.control import CellState
from cellwork.testing import CellProcess, free_port
from learnfeed.catalog.demo import demo_catalog
from learnfeed.settings import DEV_JWT_KEY
from tests.waiting import BOUND, wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
KID, SECRET = DEV_JWT_KEY.split(":", 1)


@dataclass
class Cell:
    http: str
    ws: str
    state_dir: Path

    def nats_url(self) -> str:
        return CellState.read(self.state_dir).nats_url


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    """The demo cell from src/learnfeed/cell.yaml, on free ports, one of each but the edges."""
    spec = yaml.safe_load((REPO / "src/learnfeed/cell.yaml").read_text())
    http_port, ws_port = free_port(), free_port()
    spec["name"] = "lf"
    spec["env"] = {
        "CELLWORK_GATEWAY_PORT": str(http_port),
        "CELLWORK_PUSH_PORT": str(ws_port),
        "CELLWORK_REFRESH_WINDOW": "1",
        "CELLWORK_RATE_LIMIT_RPS": "20",
        "CELLWORK_RATE_LIMIT_BURST": "40",
        "CELLWORK_ACCESS_TOKEN_TTL": "600",
        "CELLWORK_PUSH_IDLE_TIMEOUT": "3",
        # A request's whole deadline, far above /v1/home's 0.3 s per part: a home answer
        # that waited for a hung part would take this long.
        "CELLWORK_CALL_TIMEOUT": "10",
        # the machine's Redis as the gateways' shared item tier (falls through if absent)
        "CELLWORK_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    for name, service in spec["services"].items():
        service["replicas"] = 2 if name in ("gateway", "push", "recommender", "feed") else 1
    http = f"http://127.0.0.1:{http_port}"
    running = CellProcess(
        spec, tmp_path_factory.mktemp("learnfeed"), ready_urls=(f"{http}/readyz",)
    )
    with running:
        yield Cell(http, f"ws://127.0.0.1:{ws_port}/v1/stream", running.state_dir)
    assert running.process is not None and running.process.returncode == 0


async def signup(client: httpx.AsyncClient, name: str = "Learner") -> dict:
    email = f"{name.lower()}-{os.urandom(4).hex()}@example.org"
    r = await client.post(
        "/v1/auth/signup", json={"email": email, "password": "correct horse", "name": name}
    )
    assert r.status_code == 201, r.text
    return {**r.json(), "email": email}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def next_ready(ws, above: int, timeout: float = 15.0) -> int:
    """The version of the next feed.ready frame newer than ``above``."""
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if frame.get("type") == "feed.ready" and frame["version"] > above:
            return frame["version"]


async def test_the_feed_flow_walks_all_thirteen_steps(cell: Cell) -> None:
    async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
        user = await signup(client)
        token = user["access_token"]
        # 1. a socket, subscribed to the feed
        async with websockets.connect(cell.ws, additional_headers=bearer(token)) as ws:
            await ws.send(json.dumps({"type": "subscribe", "topics": ["feed"]}))
            assert json.loads(await ws.recv()) == {"type": "subscribed", "topics": ["feed"]}
            # 2-5. the first read: answered at once (a cold start), enriched
            first = await client.get("/v1/feed", params={"limit": 20}, headers=bearer(token))
            assert first.status_code == 200, first.text
            body = first.json()
            assert body["user_id"] == user["user_id"]
            assert body["version"] == 0 and body["stale"] is True
            assert len(body["items"]) == 20
            # 6-9. the read asked for a refresh; the recommender's new version reaches the socket
            version = await next_ready(ws, above=body["version"])
        # 10-13. the second read returns that version, every item enriched
        second = await client.get("/v1/feed", params={"limit": 20}, headers=bearer(token))
        assert second.status_code == 200
        fresh = second.json()
        assert fresh["version"] >= version > 0
        assert len(fresh["items"]) == 20
        for item in fresh["items"]:
            assert item["id"] and item["title"] and item["kind"] in ("lesson", "post")
            assert item["educator"]["id"] and item["educator"]["name"]
        # the feed has an ETag; the same read is 304 Not Modified
        etag = second.headers["etag"]
        again = await client.get(
            "/v1/feed", params={"limit": 20}, headers={**bearer(token), "If-None-Match": etag}
        )
        assert again.status_code == 304
        # paging goes on from the cursor with other items
        page2 = await client.get(
            "/v1/feed", params={"limit": 20, "cursor": fresh["next_cursor"]}, headers=bearer(token)
        )
        assert page2.status_code == 200
        assert not {i["id"] for i in page2.json()["items"]} & {i["id"] for i in fresh["items"]}


async def test_a_client_told_ready_never_reads_an_older_version(cell: Cell) -> None:
    """Gateways keep feed versions; a new version must replace them before feed.ready."""
    async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
        user = await signup(client, "Fresh")
        auth = bearer(user["access_token"])
        async with websockets.connect(cell.ws, additional_headers=auth) as ws:
            await client.get("/v1/feed", headers=auth)
            version = await next_ready(ws, above=0)
            for _ in range(3):
                await asyncio.sleep(1.1)  # a new refresh window each time
                await ws.send(json.dumps({"type": "ping"}))  # not idle (the cell closes at 3 s)
                # several reads, so both gateway instances hold the current version
                for _ in range(6):
                    r = await client.get("/v1/feed", headers=auth)
                    assert r.json()["version"] >= version
                version = await next_ready(ws, above=version)
                for _ in range(6):
                    r = await client.get("/v1/feed", headers=auth)
                    assert r.json()["version"] >= version, (r.json()["version"], version)


async def test_home_aggregates_profile_feed_and_follows(cell: Cell) -> None:
    async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
        user = await signup(client, "Homer")
        token = user["access_token"]
        assert (
            await client.post("/v1/educators/e007/follow", headers=bearer(token))
        ).status_code == 204
        r = await client.get("/v1/home", headers=bearer(token))
        assert r.status_code == 200
        home = r.json()
        assert home["partial"] == []
        assert home["profile"]["name"] == "Homer" and home["profile"]["following_count"] == 1
        assert home["follows"]["educator_ids"] == ["e007"]
        assert 0 < len(home["feed"]["items"]) <= 5
        me = await client.get("/v1/me", headers=bearer(token))
        assert me.json()["email"] == user["email"]


def instances(cell: Cell, service: str) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "cellwork", "status", "--json", "--state-dir", str(cell.state_dir)],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return [r for r in json.loads(out.stdout)["instances"] if r["service"] == service]


async def test_home_names_the_parts_that_missed_their_deadline(cell: Cell) -> None:
    async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
        token = (await signup(client, "Patient"))["access_token"]
        await client.get("/v1/feed", headers=bearer(token))  # the feed part needs no identity
        (identity,) = instances(cell, "identity")
        os.kill(
            identity["pid"], signal.SIGSTOP
        )  # identity hangs: profile and follows cannot answer
        try:
            started = time.monotonic()
            r = await client.get("/v1/home", headers=bearer(token))
            took = time.monotonic() - started
        finally:
            os.kill(identity["pid"], signal.SIGCONT)
        assert r.status_code == 200
        home = r.json()
        assert sorted(home["partial"]) == ["follows", "profile"]
        assert "profile" not in home and "follows" not in home
        assert home["feed"]["items"]
        # Each part has its own deadline (0.3 s): the answer does not wait for the hung
        # identity until the request's own deadline (10 s in this cell).
        assert took < 5.0


async def test_ranking_reacts_to_follows_and_likes(cell: Cell) -> None:
    educators, items = demo_catalog()
    async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
        user = await signup(client, "Ranker")
        token = user["access_token"]

        async def computed_top() -> list[dict]:
            """Read until the feed is a computed (non cold-start) version; its top 20."""
            read: list[dict] = []

            async def computed() -> bool:
                r = await client.get("/v1/feed", params={"limit": 20}, headers=bearer(token))
                read[:] = r.json()["items"] if r.json()["version"] > 0 else []
                return bool(read)

            await wait_until(computed, "a computed feed")
            return read

        before = await computed_top()
        counts = {e.id: 0 for e in educators}
        for item in before:
            counts[item["educator"]["id"]] += 1
        chosen = min(counts, key=lambda e: counts[e])
        assert counts[chosen] == 0

        assert (
            await client.post(f"/v1/educators/{chosen}/follow", headers=bearer(token))
        ).status_code == 204
        theirs = [i.id for i in items if i.educator_id == chosen][:4]
        for item_id in theirs:
            r = await client.post(
                "/v1/interactions", json={"item_id": item_id, "kind": "like"}, headers=bearer(token)
            )
            assert r.status_code == 202, r.text

        # Each read in a new refresh window asks for a fresh ranking; wait for one that
        # has seen the follow and the likes.
        deadline = time.monotonic() + 2 * BOUND
        while True:
            top = await computed_top()
            now_count = sum(1 for i in top if i["educator"]["id"] == chosen)
            if now_count > counts[chosen]:
                break
            assert time.monotonic() < deadline, "ranking never reacted"
            await asyncio.sleep(1.1)  # the next read falls in a new refresh window
        # at most a few items of one educator in the top 20
        assert now_count <= 3


async def test_bad_tokens_are_refused_with_401(cell: Cell) -> None:
    now = int(time.time())
    good = {
        "sub": "u1",
        "iat": now,
        "exp": now + 600,
        "aud": "learnfeed",
        "iss": "learnfeed-identity",
    }
    forged = jwt.encode(
        good, "another-secret-of-enough-length-32b", algorithm="HS256", headers={"kid": KID}
    )
    expired = jwt.encode(
        {**good, "iat": now - 1200, "exp": now - 600},
        SECRET,
        algorithm="HS256",
        headers={"kid": KID},
    )
    wrong_aud = jwt.encode(
        {**good, "aud": "elsewhere"}, SECRET, algorithm="HS256", headers={"kid": KID}
    )
    wrong_kid = jwt.encode(good, SECRET, algorithm="HS256", headers={"kid": "nope"})
    unsigned = jwt.encode(good, None, algorithm="none")
    async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
        assert (await client.get("/v1/feed")).status_code == 401
        for token in (forged, expired, wrong_aud, wrong_kid, unsigned, "not-a-jwt"):
            r = await client.get("/v1/feed", headers=bearer(token))
            assert r.status_code == 401, token
            assert r.json()["error"]["code"] == "unauthenticated"
            assert r.headers["www-authenticate"] == "Bearer"
        r = await client.get("/v1/feed", headers={"Authorization": "Basic dTpw"})
        assert r.status_code == 401


async def test_bad_requests_get_clear_errors_and_store_nothing(cell: Cell) -> None:
    async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
        user = await signup(client, "Careful")
        auth = bearer(user["access_token"])
        # malformed JSON: 400, and no account is created
        r = await client.post(
            "/v1/auth/signup",
            content=b'{"email": "x@y.io", "password":',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
        # a body over 64 KB: 413, unread
        big = {"email": "big@example.org", "password": "x" * 70_000, "name": "Big"}
        r = await client.post("/v1/auth/signup", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        # validation: 422 with the field named; nothing stored (login fails after)
        r = await client.post(
            "/v1/auth/signup", json={"email": "v@example.org", "password": "short", "name": "V"}
        )
        assert r.status_code == 422 and "password" in r.json()["error"]["message"]
        r = await client.post(
            "/v1/auth/login", json={"email": "v@example.org", "password": "short"}
        )
        assert r.status_code == 401
        # a taken email: 409
        r = await client.post(
            "/v1/auth/signup",
            json={"email": user["email"], "password": "password99", "name": "Dup"},
        )
        assert r.status_code == 409
        # bad query values and cursors
        assert (
            await client.get("/v1/feed", params={"limit": 1000}, headers=auth)
        ).status_code == 422
        assert (
            await client.get("/v1/feed", params={"cursor": "%%%"}, headers=auth)
        ).status_code == 422
        # unknown items: 404, and no event reaches the stream
        nc = await nats.connect(cell.nats_url())
        try:
            js = nc.jetstream()
            before = (await js.stream_info("INTERACTIONS")).state.messages
            r = await client.post(
                "/v1/interactions", json={"item_id": "i99999", "kind": "like"}, headers=auth
            )
            assert r.status_code == 404
            r = await client.post(
                "/v1/interactions", json={"item_id": "i00001", "kind": "hug"}, headers=auth
            )
            assert r.status_code == 422
            assert (await js.stream_info("INTERACTIONS")).state.messages == before
            r = await client.post(
                "/v1/interactions", json={"item_id": "i00001", "kind": "view"}, headers=auth
            )
            assert r.status_code == 202
            assert (await js.stream_info("INTERACTIONS")).state.messages == before + 1
        finally:
            await nc.close()
        assert (await client.get("/v1/items/i99999", headers=auth)).status_code == 404
        assert (await client.get("/v1/items/i00042", headers=auth)).json()["id"] == "i00042"
        assert (await client.post("/v1/educators/e999/follow", headers=auth)).status_code == 404
        r = await client.get("/v1/nowhere", headers=auth)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_a_refresh_token_works_once_and_its_reuse_revokes_the_session(cell: Cell) -> None:
    async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
        user = await signup(client, "Rotator")
        first = await client.post("/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
        assert first.status_code == 200
        rotated = first.json()["refresh_token"]
        assert rotated != user["refresh_token"]
        reuse = await client.post("/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
        assert reuse.status_code == 401
        # the replay revoked the family: the rotated token is dead too
        after = await client.post("/v1/auth/refresh", json={"refresh_token": rotated})
        assert after.status_code == 401
        # logging in starts a new session
        login = await client.post(
            "/v1/auth/login", json={"email": user["email"], "password": "correct horse"}
        )
        assert login.status_code == 200
        assert (
            await client.post(
                "/v1/auth/login", json={"email": user["email"], "password": "wrong horse"}
            )
        ).status_code == 401


async def test_a_socket_without_a_valid_token_is_refused(cell: Cell) -> None:
    for url in (cell.ws, cell.ws + "?access_token=forged.token.here"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        assert refused.value.response.status_code == 403


async def test_a_socket_answers_pings_and_closes_oversized_frames(cell: Cell) -> None:
    async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
        token = (await signup(client, "Pinger"))["access_token"]
    async with websockets.connect(f"{cell.ws}?access_token={token}") as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.send("not json")
        assert json.loads(await ws.recv())["type"] == "error"
        await ws.send("x" * 70_000)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 1009


async def test_a_silent_socket_is_closed_as_going_away(cell: Cell) -> None:
    async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
        token = (await signup(client, "Quiet"))["access_token"]
    async with websockets.connect(f"{cell.ws}?access_token={token}") as ws:
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), BOUND)
        assert closed.value.rcvd.code == 1001
        assert time.monotonic() - started > 2.5  # not before the idle timeout (3 s)


async def test_a_user_over_the_rate_limit_gets_429_with_retry_after(cell: Cell) -> None:
    async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
        token = (await signup(client, "Hasty"))["access_token"]
        started = time.monotonic()
        replies = await asyncio.gather(
            *(client.get("/v1/items/i00001", headers=bearer(token)) for _ in range(200))
        )
        elapsed = time.monotonic() - started
        limited = [r for r in replies if r.status_code == 429]
        # two gateway instances, each a bucket of 40 refilled at 20/s, let at most this many by
        allowed = 2 * (40 + 20 * elapsed)
        assert limited, elapsed
        assert 200 - len(limited) <= allowed
        assert int(limited[0].headers["retry-after"]) >= 1
        assert limited[0].json()["error"]["code"] == "rate_limited"
        assert all(r.status_code in (200, 429) for r in replies)


async def test_openapi_documents_every_route_with_its_errors(cell: Cell) -> None:
    async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
        doc = (await client.get("/openapi.json")).json()
        assert (await client.get("/docs")).status_code == 200
    paths = doc["paths"]
    for path, method in [
        ("/v1/auth/signup", "post"),
        ("/v1/auth/login", "post"),
        ("/v1/auth/refresh", "post"),
        ("/v1/me", "get"),
        ("/v1/feed", "get"),
        ("/v1/items/{item_id}", "get"),
        ("/v1/interactions", "post"),
        ("/v1/educators/{educator_id}/follow", "post"),
        ("/v1/educators/{educator_id}/follow", "delete"),
        ("/v1/home", "get"),
    ]:
        assert method in paths[path], (path, method)
    assert {"401", "429"} <= set(paths["/v1/feed"]["get"]["responses"])
    assert "413" in paths["/v1/auth/signup"]["post"]["responses"]


async def test_gateway_and_push_expose_metrics_with_bounded_labels(cell: Cell) -> None:
    async with httpx.AsyncClient(base_url=cell.http, timeout=10) as client:
        token = (await signup(client, "Counter"))["access_token"]
        for item in ("i00001", "i00002", "i00003"):
            await client.get(f"/v1/items/{item}", headers=bearer(token))
        await client.get("/v1/feed", headers=bearer(token))
        # every gateway instance's metrics port: either instance may have answered
        text = "".join(
            [
                (await client.get(f"http://127.0.0.1:{gw['metrics_port']}/metrics")).text
                for gw in instances(cell, "gateway")
            ]
        )
    assert 'route="/v1/items/{item_id}"' in text
    assert 'route="/v1/feed"' in text
    assert "i00002" not in text
    assert "cellwork_http_duration_seconds_bucket" in text
    push_http = cell.ws.replace("ws://", "http://").replace("/v1/stream", "")
    async with httpx.AsyncClient(base_url=push_http, timeout=10) as client:
        assert (await client.get("/readyz")).status_code == 200
        assert "learnfeed_push_connections" in (await client.get("/metrics")).text


def test_schemathesis_finds_no_difference_between_the_openapi_document_and_the_api(
    cell: Cell, tmp_path: Path
) -> None:
    """The contract-testing tool generates requests from /openapi.json (valid and not)
    and checks every answer against the document: statuses, schemas, headers."""
    st = Path(sys.executable).parent / "st"
    r = httpx.post(
        f"{cell.http}/v1/auth/signup",
        json={
            "email": f"st-{os.urandom(4).hex()}@example.org",
            "password": "correct horse",
            "name": "Contract",
        },
        timeout=10,
    )
    token = r.json()["access_token"]
    out = subprocess.run(
        [
            str(st),
            "run",
            f"{cell.http}/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # its run data stays out of the working tree
    )
    assert out.returncode == 0, out.stdout[-6000:]
