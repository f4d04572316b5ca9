"""learnfeed's load scenario: sign up users, hold their sockets, read feeds and interact.

    cellwork loadgen --scenario learnfeed.loadgen --users 50 --rate 200 --duration 30 \\
        --mix feed=70,home=20,interaction=10

Speaks only the public contract, HTTP (``httpx``, HTTP/1.1 keep-alive) to the gateway
and WebSocket (``websockets``) to push, so it loads any deployment of it: a local
cell, a Kubernetes ingress, a single process. Beside the engine's per-route numbers
it times ``feed.ready`` delivery (``READY_DEFINITION``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import orjson
import typer
import websockets
from websockets.asyncio.client import ClientConnection, connect

from cellwork.loadgen import (
    HttpPools,
    LoadgenError,
    Mix,
    Outcome,
    RouteStats,
    RunContext,
    Samples,
    Scenario,
    failure_kind,
    http_pools,
    milliseconds,
    parse_mix,
)
from learnfeed.contract import INTERACTION_KINDS

ROUTES = ("feed", "home", "interaction")
"""The routes a mix can name: ``GET /v1/feed``, ``GET /v1/home``, ``POST /v1/interactions``."""

OK_STATUS = {"feed": 200, "home": 200, "interaction": 202}
DEFAULT_MIX = "feed=70,home=20,interaction=10"

KIND_WEIGHTS = {"view": 6, "like": 3, "complete": 1}  # most interactions are views
INTERACTION_MIX = Mix(tuple((kind, KIND_WEIGHTS[kind]) for kind in INTERACTION_KINDS))
"""The kinds of ``POST /v1/interactions``, every kind of the contract with its weight."""

SIGNUP_CONCURRENCY = 4  # sign-up hashes a password: a slow call, kept off the measurement
SIGNUP_ATTEMPTS = 20  # 429s waited out before a sign-up counts as failed
HANDSHAKE_CONCURRENCY = 64
SETTLE_SECONDS = 1.0  # after the last answer, for the feed.ready frames still on their way
RECONNECT_DELAY = 0.5
SIGNUP_PASSWORD = "loadgen-password"
SUBSCRIBE = orjson.dumps({"type": "subscribe", "topics": ["feed"]}).decode()

READY_DEFINITION = (
    "time from the answer of a user's most recent feed read (GET /v1/feed, or GET /v1/home "
    "with its feed part) to the next feed.ready frame on that user's socket carrying a newer "
    "version than the read saw; frames with no read outstanding are not timed. Reads are "
    "coalesced into one refresh per window by the feed service, so this is the wait a client "
    "sees after its last read."
)


@dataclass(slots=True)
class _Read:
    answered_at: float
    version: int


class ReadyTracker:
    """Times feed.ready delivery per user, as ``READY_DEFINITION`` says.

    Holds one outstanding read per user (the latest) and the newest version each
    user's socket announced, so a frame that beat a read's answer is not
    mistaken for the answer to a later refresh.
    """

    def __init__(self) -> None:
        self.latencies = Samples()
        self.frames = 0
        self.untimed = 0  # frames with no read outstanding (interactions, recompute passes)
        self._pending: dict[str, _Read] = {}
        self._announced: dict[str, int] = {}

    def read_answered(self, user: str, answered_at: float, version: int) -> None:
        """A feed read of ``user`` answered with ``version``: start (or restart) its clock."""
        if self._announced.get(user, -1) > version:
            # The fresh version was announced before this answer arrived: nothing to wait for.
            self._pending.pop(user, None)
            return
        self._pending[user] = _Read(answered_at, version)

    def ready(self, user: str, at: float, version: int) -> float | None:
        """A feed.ready frame for ``user``; returns the latency it completed, if any."""
        self.frames += 1
        self._announced[user] = max(version, self._announced.get(user, -1))
        read = self._pending.get(user)
        if read is None or version <= read.version:
            self.untimed += 1
            return None
        del self._pending[user]
        latency = max(0.0, at - read.answered_at)
        self.latencies.add(latency)
        return latency

    @property
    def outstanding(self) -> int:
        return len(self._pending)


@dataclass(frozen=True, slots=True)
class Settings:
    """The scenario's options; ``sockets`` None means one per user. ValueError when out of range."""

    gateway: str = "http://127.0.0.1:8080"
    push: str = "ws://127.0.0.1:8081"
    users: int = 50
    sockets: int | None = None
    mix: Mix = field(default_factory=lambda: parse_mix(DEFAULT_MIX, ROUTES))

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError("--users must be at least 1")
        if self.sockets is not None and self.sockets < 0:
            raise ValueError("--sockets must not be negative")

    @property
    def socket_count(self) -> int:
        return self.users if self.sockets is None else min(self.sockets, self.users)


@dataclass(slots=True)
class User:
    """A signed-up user: its token, its connection pool, the items its feed showed."""

    user_id: str
    headers: dict[str, str]
    token: str
    http: httpx.AsyncClient
    watched: bool = False  # holds a socket: its feed reads start the feed.ready clock
    items: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Crowd:
    """One run's users and what they saw: the state every request of the run shares."""

    run: RunContext
    users: list[User] = field(default_factory=list)
    with_items: list[User] = field(default_factory=list)  # users whose feed showed items
    ready: ReadyTracker = field(default_factory=ReadyTracker)
    signup: RouteStats = field(default_factory=RouteStats)
    sockets_open: int = 0
    sockets_failed: int = 0
    socket_drops: int = 0
    home_partial: int = 0  # GET /v1/home answers that left a part out
    all_ready: asyncio.Event = field(default_factory=asyncio.Event)  # no read awaits feed.ready


def _retry_after(response: httpx.Response) -> float:
    """Seconds a 429 asks to wait (Retry-After), 1 s when it does not say."""
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.1), 30.0)
    except ValueError:
        return 1.0


class LearnfeedLoad(Scenario[Crowd]):
    """Users read their feeds and home pages and interact, while their sockets wait for
    ``feed.ready``. Interactions go to items a user's feed showed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @contextlib.asynccontextmanager
    async def session(self, run: RunContext) -> AsyncIterator[Crowd]:
        """Sign up, open the sockets; on exit wait a little for the last frames, close all."""
        crowd = Crowd(run)
        async with http_pools(run, base_url=self.settings.gateway) as pools:
            await self._check_ready(pools[0])
            run.phase = "signing up"
            crowd.users = await self._sign_up(crowd, pools)
            run.phase = "opening sockets"
            handshakes = asyncio.Semaphore(HANDSHAKE_CONCURRENCY)  # no stampede of sockets
            async with asyncio.TaskGroup() as socket_group:
                watched = [user for user in crowd.users if user.watched]
                opened = [asyncio.Event() for _ in watched]
                sockets = [
                    socket_group.create_task(self._hold_socket(crowd, user, event, handshakes))
                    for user, event in zip(watched, opened, strict=True)
                ]
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(run.timeout + 5):
                        await asyncio.gather(*(event.wait() for event in opened))
                yield crowd
                run.phase = "settling"
                await self._settle(crowd)
                for task in sockets:
                    task.cancel()

    async def perform(self, state: Crowd) -> Outcome:
        """One request of the mix for a random user; learns items and versions from answers."""
        rng = state.run.rng
        route = self.settings.mix.pick(rng.random())
        user = rng.choice(state.users)
        if route == "interaction" and not user.items:
            if not state.with_items:
                route = "feed"  # nobody has seen a feed yet: read one first
            else:
                user = rng.choice(state.with_items)
        try:
            response = await self._send(route, user, state)
        except httpx.HTTPError as exc:
            return Outcome.failure(route, exc)
        answered = state.run.now()
        if response.status_code != OK_STATUS[route]:
            return Outcome(route, str(response.status_code))
        try:
            self._observe(state, route, user, response, answered)
        except (AttributeError, KeyError, TypeError, ValueError):  # not the contract's shape
            return Outcome(route, "invalid_body")
        return Outcome(route)

    def progress(self, state: Crowd) -> Mapping[str, int | float]:
        return {
            "feed.ready": len(state.ready.latencies),
            "users": len(state.users),
            "sockets": state.sockets_open,
        }

    def sections(self, state: Crowd) -> Mapping[str, Mapping[str, Any]]:
        ready, signup = state.ready, state.signup
        return {
            "feed_ready": {
                "count": len(ready.latencies),
                "p50_ms": milliseconds(ready.latencies.percentile(50)),
                "p99_ms": milliseconds(ready.latencies.percentile(99)),
                "frames": ready.frames,
                "untimed_frames": ready.untimed,
                "definition": READY_DEFINITION,
            },
            "signup": {
                "ok": signup.ok,
                "errors": dict(sorted(signup.errors.items())),
                "p50_ms": milliseconds(signup.latencies.percentile(50)),
            },
            "sockets": {
                "open": state.sockets_open,
                "failed": state.sockets_failed,
                "drops": state.socket_drops,
            },
            "home": {"partial": state.home_partial},
        }

    async def _check_ready(self, http: httpx.AsyncClient) -> None:
        gateway = self.settings.gateway
        try:
            response = await http.get("/readyz")
        except httpx.HTTPError as exc:
            raise LoadgenError(f"cannot reach the gateway at {gateway}: {exc}") from exc
        if response.status_code != 200:
            raise LoadgenError(
                f"the gateway at {gateway} is not ready "
                f"(GET /readyz answered {response.status_code})"
            )

    async def _sign_up(self, crowd: Crowd, pools: HttpPools) -> list[User]:
        run, stats = crowd.run, crowd.signup
        gate = asyncio.Semaphore(SIGNUP_CONCURRENCY)

        async def one(index: int) -> User | None:
            http = pools[index % len(pools)]
            body = {
                "email": f"loadgen-{run.run_id}-{index}@loadgen.example.com",
                "password": SIGNUP_PASSWORD,
                "name": f"Loadgen {index}",
            }
            for _attempt in range(SIGNUP_ATTEMPTS):
                async with gate:
                    started = run.now()
                    try:
                        response = await http.post("/v1/auth/signup", json=body)
                    except httpx.HTTPError as exc:
                        stats.record(run.now() - started, failure_kind(exc))
                        return None
                    latency = run.now() - started
                if response.status_code != 429:
                    break
                # Sign-ups are rate limited per client address: wait as told, then again.
                stats.record(latency, "429")
                await asyncio.sleep(_retry_after(response))
            if response.status_code != 201:
                stats.record(latency, str(response.status_code))
                return None
            try:
                data = orjson.loads(response.content)
                user_id, token = str(data["user_id"]), str(data["access_token"])
            except (ValueError, KeyError, TypeError):
                stats.record(latency, "invalid_body")
                return None
            stats.record(latency)
            return User(user_id, {"authorization": f"Bearer {token}"}, token, http)

        results = await asyncio.gather(*(one(i) for i in range(self.settings.users)))
        users = [user for user in results if user is not None]
        if not users:
            raise LoadgenError(f"no user could sign up (errors: {dict(stats.errors)})")
        for user in users[: self.settings.socket_count]:
            user.watched = True
        return users

    async def _hold_socket(
        self, crowd: Crowd, user: User, opened: asyncio.Event, handshakes: asyncio.Semaphore
    ) -> None:
        """Keep one socket of ``user`` open, timing its feed.ready frames; reconnects on drops."""
        push = self.settings.push.rstrip("/")
        url = f"{push}/v1/stream?access_token={quote(user.token, safe='')}"
        while True:
            try:
                async with handshakes:
                    ws = await connect(url, open_timeout=crowd.run.timeout, ping_interval=20)
                async with ws:
                    await ws.send(SUBSCRIBE)
                    await self._receive(crowd, user, ws, opened)
            except (OSError, TimeoutError, websockets.WebSocketException):
                pass
            if not opened.is_set():
                crowd.sockets_failed += 1
                opened.set()
                return
            crowd.socket_drops += 1
            await asyncio.sleep(RECONNECT_DELAY)

    async def _receive(
        self, crowd: Crowd, user: User, ws: ClientConnection, opened: asyncio.Event
    ) -> None:
        async for raw in ws:
            try:
                message = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(message, dict):
                continue
            kind = message.get("type")
            if kind == "feed.ready" and isinstance(message.get("version"), int):
                crowd.ready.ready(user.user_id, crowd.run.now(), message["version"])
                if not crowd.ready.outstanding:
                    crowd.all_ready.set()
            elif kind == "subscribed" and not opened.is_set():
                crowd.sockets_open += 1
                opened.set()

    async def _send(self, route: str, user: User, crowd: Crowd) -> httpx.Response:
        http = user.http
        if route == "feed":
            return await http.get("/v1/feed", headers=user.headers)
        if route == "home":
            return await http.get("/v1/home", headers=user.headers)
        body = {
            "item_id": crowd.run.rng.choice(user.items),
            "kind": INTERACTION_MIX.pick(crowd.run.rng.random()),
        }
        return await http.post("/v1/interactions", json=body, headers=user.headers)

    def _observe(
        self, crowd: Crowd, route: str, user: User, response: httpx.Response, answered: float
    ) -> None:
        """Learn from an answer: the items to interact with, the version a socket should beat."""
        if route == "interaction":
            return
        body = orjson.loads(response.content)
        if route == "home":
            if body.get("partial"):
                crowd.home_partial += 1
            body = body.get("feed")
            if body is None:
                return
        items = [str(item["id"]) for item in body["items"]]
        if items:
            if not user.items:
                crowd.with_items.append(user)
            if route == "feed" or not user.items:
                user.items = items
        if user.watched:
            crowd.ready.read_answered(user.user_id, answered, int(body["version"]))

    async def _settle(self, crowd: Crowd) -> None:
        """Wait a little for feed.ready frames of the last reads, less if none is outstanding."""
        if crowd.run.stopping or not crowd.ready.outstanding:
            return
        crowd.all_ready.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(crowd.all_ready.wait(), SETTLE_SECONDS)


def create_scenario(
    gateway: Annotated[str, typer.Option(help="the gateway's base URL")] = "http://127.0.0.1:8080",
    push: Annotated[str, typer.Option(help="the push service's base URL")] = "ws://127.0.0.1:8081",
    users: Annotated[int, typer.Option(help="users to sign up")] = 50,
    sockets: Annotated[
        int | None, typer.Option(help="sockets to hold open (default: one per user)")
    ] = None,
    mix: Annotated[str, typer.Option(help=f"weights of {', '.join(ROUTES)}")] = DEFAULT_MIX,
) -> LearnfeedLoad:
    """Sign up users, hold sockets open, drive a mix of reads and interactions."""
    try:
        weights = parse_mix(mix, ROUTES)
    except ValueError as exc:
        raise ValueError(f"--mix: {exc}") from None
    return LearnfeedLoad(Settings(gateway, push, users, sockets, weights))
