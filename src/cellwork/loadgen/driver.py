"""One load run against the public contract: sign up, hold sockets, drive the mix, settle.

Speaks only HTTP (``httpx``, HTTP/1.1 keep-alive) and WebSocket (``websockets``) to the
gateway and push endpoints, so it loads any deployment of the contract: a local cell,
a Kubernetes ingress, a single process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import secrets
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection, connect

from cellwork.loadgen.stats import (
    DEFAULT_MIX,
    INTERACTION_KINDS,
    OK_STATUS,
    Mix,
    Pacer,
    RateWindow,
    RunStats,
    parse_mix,
)

# httpcore's pool does work quadratic in its connections on every request: many small
# pools (users spread over them) keep a client core's CPU for the requests themselves.
POOL_SIZE = 16
SIGNUP_CONCURRENCY = 4  # sign-up hashes a password: a slow call, kept off the measurement
SIGNUP_ATTEMPTS = 20  # 429s waited out before a sign-up counts as failed
HANDSHAKE_CONCURRENCY = 64
SETTLE_SECONDS = 1.0  # after the last answer, for the feed.ready frames still on their way
RECONNECT_DELAY = 0.5
SIGNUP_PASSWORD = "loadgen-password"
SUBSCRIBE = orjson.dumps({"type": "subscribe", "topics": ["feed"]}).decode()


class LoadgenError(Exception):
    """The run could not start: the gateway is unreachable or not ready, nobody signed up."""


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """What to run; ``sockets`` None means one per user. Raises ValueError when out of range."""

    gateway: str = "http://127.0.0.1:8080"
    push: str = "ws://127.0.0.1:8081"
    users: int = 50
    sockets: int | None = None
    rate: float = 200.0
    duration: float = 30.0
    mix: Mix = field(default_factory=lambda: parse_mix(DEFAULT_MIX))
    max_in_flight: int = 256
    timeout: float = 5.0
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError("--users must be at least 1")
        sockets = self.users if self.sockets is None else min(max(self.sockets, 0), self.users)
        object.__setattr__(self, "sockets", sockets)
        for name in ("rate", "duration", "timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"--{name} must be a positive number")
        if self.max_in_flight < 1:
            raise ValueError("--max-in-flight must be at least 1")

    @property
    def socket_count(self) -> int:
        return self.users if self.sockets is None else self.sockets

    def describe(self) -> dict[str, Any]:
        """The settings as the summary reports them."""
        return {
            "gateway": self.gateway,
            "push": self.push,
            "users": self.users,
            "sockets": self.socket_count,
            "rate": self.rate,
            "duration": self.duration,
            "mix": self.mix.as_dict(),
            "max_in_flight": self.max_in_flight,
            "timeout": self.timeout,
            "run_id": self.run_id,
        }


@dataclass(slots=True)
class User:
    """A signed-up user: its token, its connection pool, the items its feed showed."""

    user_id: str
    headers: dict[str, str]
    token: str
    http: httpx.AsyncClient
    watched: bool = False  # holds a socket: its feed reads start the feed.ready clock
    items: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for the live display."""

    phase: str
    elapsed: float
    duration: float
    planned: int
    sent: int
    ok: int
    errors: int
    dropped: int
    in_flight: int
    rate: float  # answers per second over the last two seconds
    ready: int
    users: int
    sockets: int


def _retry_after(response: httpx.Response) -> float:
    """Seconds a 429 asks to wait (Retry-After), 1 s when it does not say."""
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.1), 30.0)
    except ValueError:
        return 1.0


def _failure(exc: httpx.HTTPError) -> str:
    """The error key of a request that got no answer."""
    return "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"


class LoadRun:
    """One run. ``run()`` returns the summary; ``stop()`` ends the sending early.

    Owns its tasks: request tasks and socket tasks live in task groups that are
    drained (requests) or cancelled (sockets) before ``run()`` returns.
    """

    def __init__(self, config: LoadConfig, seed: int | None = None) -> None:
        self.config = config
        self.stats = RunStats()
        self.phase = "starting"
        self.users: list[User] = []
        self._rng = random.Random(seed)
        self._with_items: list[User] = []
        self._in_flight = 0
        self._stopping = False
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._rate = RateWindow()
        self._all_ready = asyncio.Event()  # set when no read waits for its feed.ready
        self._handshakes = asyncio.Semaphore(HANDSHAKE_CONCURRENCY)  # no stampede of sockets

    def stop(self) -> None:
        """Send nothing more; answers in flight are still awaited and counted."""
        self._stopping = True

    def _now(self) -> float:
        # Not loop.time(): uvloop's clock ticks in whole milliseconds.
        return time.perf_counter()

    def elapsed(self) -> float:
        if self._started_at is None:
            return 0.0
        return (self._ended_at or self._now()) - self._started_at

    def progress(self) -> Progress:
        """The current counters; call from the loop that runs ``run()``."""
        stats = self.stats
        completed = stats.completed
        self._rate.observe(self._now(), completed)
        return Progress(
            phase=self.phase,
            elapsed=self.elapsed(),
            duration=self.config.duration,
            planned=stats.planned,
            sent=stats.sent,
            ok=stats.ok,
            errors=stats.errors,
            dropped=stats.dropped,
            in_flight=self._in_flight,
            rate=self._rate.rate(),
            ready=len(stats.ready.latencies),
            users=len(self.users),
            sockets=stats.sockets_open,
        )

    async def run(self) -> dict[str, Any]:
        """Sign up, open sockets, drive the mix for the duration; the summary as JSON data.

        Raises LoadgenError when the gateway cannot be reached or nobody could sign up.
        """
        cfg = self.config
        tls = ssl.create_default_context()  # once: loading the CA bundle takes ~20 ms
        async with contextlib.AsyncExitStack() as stack:
            pools = [
                await stack.enter_async_context(self._client(tls))
                for _ in range(math.ceil(cfg.max_in_flight / POOL_SIZE))
            ]
            await self._check_ready(pools[0])
            self.phase = "signing up"
            self.users = await self._sign_up(pools)
            self.phase = "opening sockets"
            async with asyncio.TaskGroup() as socket_group:
                watched = [user for user in self.users if user.watched]
                opened = [asyncio.Event() for _ in watched]
                sockets = [
                    socket_group.create_task(self._hold_socket(user, event))
                    for user, event in zip(watched, opened, strict=True)
                ]
                waits = [asyncio.create_task(event.wait()) for event in opened]
                if waits:
                    await asyncio.wait(waits, timeout=cfg.timeout + 5)
                    for wait in waits:
                        wait.cancel()
                self.phase = "running"
                self._started_at = self._now()
                async with asyncio.TaskGroup() as requests:
                    await self._drive(requests)
                    self.phase = "draining"
                self._ended_at = self._now()
                self.phase = "settling"
                await self._settle()
                for task in sockets:
                    task.cancel()
        self.phase = "done"
        summary = self.stats.summary(self.elapsed(), cfg.describe())
        summary["requests"]["stopped_early"] = self._stopping
        return summary

    def _client(self, tls: ssl.SSLContext) -> httpx.AsyncClient:
        size = min(POOL_SIZE, self.config.max_in_flight)
        return httpx.AsyncClient(
            base_url=self.config.gateway,
            timeout=self.config.timeout,
            verify=tls,
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            http1=True,
            http2=False,
        )

    async def _check_ready(self, http: httpx.AsyncClient) -> None:
        try:
            response = await http.get("/readyz")
        except httpx.HTTPError as exc:
            raise LoadgenError(f"cannot reach the gateway at {self.config.gateway}: {exc}") from exc
        if response.status_code != 200:
            raise LoadgenError(
                f"the gateway at {self.config.gateway} is not ready "
                f"(GET /readyz answered {response.status_code})"
            )

    async def _sign_up(self, pools: list[httpx.AsyncClient]) -> list[User]:
        cfg = self.config
        gate = asyncio.Semaphore(SIGNUP_CONCURRENCY)

        async def one(index: int) -> User | None:
            http = pools[index % len(pools)]
            body = {
                "email": f"loadgen-{cfg.run_id}-{index}@loadgen.example.com",
                "password": SIGNUP_PASSWORD,
                "name": f"Loadgen {index}",
            }
            for _attempt in range(SIGNUP_ATTEMPTS):
                async with gate:
                    started = self._now()
                    try:
                        response = await http.post("/v1/auth/signup", json=body)
                    except httpx.HTTPError as exc:
                        self.stats.signup.record(self._now() - started, _failure(exc))
                        return None
                    latency = self._now() - started
                if response.status_code != 429:
                    break
                # Sign-ups are rate limited per client address: wait as told, then again.
                self.stats.signup.record(latency, "429")
                await asyncio.sleep(_retry_after(response))
            if response.status_code != 201:
                self.stats.signup.record(latency, str(response.status_code))
                return None
            try:
                data = orjson.loads(response.content)
                user_id, token = str(data["user_id"]), str(data["access_token"])
            except (ValueError, KeyError, TypeError):
                self.stats.signup.record(latency, "invalid_body")
                return None
            self.stats.signup.record(latency)
            return User(user_id, {"authorization": f"Bearer {token}"}, token, http)

        results = await asyncio.gather(*(one(i) for i in range(cfg.users)))
        users = [user for user in results if user is not None]
        if not users:
            errors = dict(self.stats.signup.errors)
            raise LoadgenError(f"no user could sign up (errors: {errors})")
        for user in users[: cfg.socket_count]:
            user.watched = True
        return users

    async def _hold_socket(self, user: User, opened: asyncio.Event) -> None:
        """Keep one socket of ``user`` open, timing its feed.ready frames; reconnects on drops."""
        cfg = self.config
        url = f"{cfg.push.rstrip('/')}/v1/stream?access_token={quote(user.token, safe='')}"
        while True:
            try:
                async with self._handshakes:
                    ws = await connect(url, open_timeout=cfg.timeout, ping_interval=20)
                async with ws:
                    await ws.send(SUBSCRIBE)
                    await self._receive(user, ws, opened)
            except (OSError, TimeoutError, websockets.WebSocketException):
                pass
            if not opened.is_set():
                self.stats.sockets_failed += 1
                opened.set()
                return
            self.stats.socket_drops += 1
            await asyncio.sleep(RECONNECT_DELAY)

    async def _receive(self, user: User, ws: ClientConnection, opened: asyncio.Event) -> None:
        async for raw in ws:
            try:
                message = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(message, dict):
                continue
            kind = message.get("type")
            if kind == "feed.ready" and isinstance(message.get("version"), int):
                self.stats.ready.ready(user.user_id, self._now(), message["version"])
                if not self.stats.ready.outstanding:
                    self._all_ready.set()
            elif kind == "subscribed" and not opened.is_set():
                self.stats.sockets_open += 1
                opened.set()

    async def _drive(self, requests: asyncio.TaskGroup) -> None:
        """Send on the open-loop schedule; what the in-flight bound refuses is dropped."""
        cfg = self.config
        pacer = Pacer(cfg.rate, cfg.duration)
        self.stats.planned = pacer.total
        assert self._started_at is not None
        start = self._started_at
        index = 0
        while index < pacer.total and not self._stopping:
            due = pacer.due(self._now() - start)
            while index < due:
                if self._in_flight >= cfg.max_in_flight:
                    self.stats.dropped += 1
                else:
                    self._in_flight += 1
                    self.stats.sent += 1
                    requests.create_task(self._request(start + pacer.send_at(index)))
                index += 1
            if index < pacer.total:
                await asyncio.sleep(max(0.0, start + pacer.send_at(index) - self._now()))

    async def _request(self, scheduled: float) -> None:
        """One request of the mix; latency counts from its scheduled time (open loop)."""
        try:
            self.stats.send_lag.add(self._now() - scheduled)
            route = self.config.mix.pick(self._rng.random())
            user = self._rng.choice(self.users)
            if route == "interaction" and not user.items:
                if not self._with_items:
                    route = "feed"  # nobody has seen a feed yet: read one first
                else:
                    user = self._rng.choice(self._with_items)
            stats = self.stats.routes[route]
            try:
                response = await self._send(route, user)
            except httpx.HTTPError as exc:
                stats.record(self._now() - scheduled, _failure(exc))
                return
            answered = self._now()
            if response.status_code != OK_STATUS[route]:
                stats.record(answered - scheduled, str(response.status_code))
                return
            try:
                self._observe(route, user, response, answered)
            except (AttributeError, KeyError, TypeError, ValueError):  # not the contract's shape
                stats.record(answered - scheduled, "invalid_body")
                return
            stats.record(answered - scheduled)
        finally:
            self._in_flight -= 1

    async def _send(self, route: str, user: User) -> httpx.Response:
        http = user.http
        if route == "feed":
            return await http.get("/v1/feed", headers=user.headers)
        if route == "home":
            return await http.get("/v1/home", headers=user.headers)
        body = {
            "item_id": self._rng.choice(user.items),
            "kind": INTERACTION_KINDS.pick(self._rng.random()),
        }
        return await http.post("/v1/interactions", json=body, headers=user.headers)

    def _observe(self, route: str, user: User, response: httpx.Response, answered: float) -> None:
        """Learn from an answer: the items to interact with, the version a socket should beat."""
        if route == "interaction":
            return
        body = orjson.loads(response.content)
        if route == "home":
            if body.get("partial"):
                self.stats.routes["home"].partial += 1
            body = body.get("feed")
            if body is None:
                return
        items = [str(item["id"]) for item in body["items"]]
        if items:
            if not user.items:
                self._with_items.append(user)
            if route == "feed" or not user.items:
                user.items = items
        if user.watched:
            self.stats.ready.read_answered(user.user_id, answered, int(body["version"]))

    async def _settle(self) -> None:
        """Wait a little for feed.ready frames of the last reads, less if none is outstanding."""
        if self._stopping or not self.stats.ready.outstanding:
            return
        self._all_ready.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_ready.wait(), SETTLE_SECONDS)
