"""A learnfeed cell for fault tests, and the load a fault test drives through it.

The load speaks the public contract only: ``GET /v1/feed`` and ``POST /v1/interactions``
(each interaction with its own ``Idempotency-Key``, so the event id the gateway gives it,
``ix.<user>.<key>``, is known to the ledger). Its client is ``cellwork.testing.httpload``:
httpx took about 2 ms of CPU a request here, which would starve the cell it measures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cellwork.runtime.control import CellState, request
from cellwork.testing import CellProcess, free_port
from cellwork.testing.driver import Answer
from cellwork.testing.httpload import HttpError, LoadClient
from learnfeed.catalog.demo import demo_catalog
from learnfeed.settings import LearnfeedSettings

REPO = Path(__file__).resolve().parents[2]
USERS = 40


def cell_spec(
    name: str,
    env: dict[str, str] | None = None,
    replicas: dict[str, int] | None = None,
    supervisor: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The demo cell from src/learnfeed/cell.yaml under ``name``, with ``env`` over it,
    ``replicas`` per service and ``supervisor`` settings changed where given."""
    spec: dict[str, Any] = yaml.safe_load((REPO / "src/learnfeed/cell.yaml").read_text())
    spec["name"] = name
    for service, count in (replicas or {}).items():
        spec["services"][service]["replicas"] = count
    if supervisor:
        spec["supervisor"] = {**spec.get("supervisor", {}), **supervisor}
    spec["env"] = {
        "CELLWORK_REFRESH_WINDOW": "2",
        "CELLWORK_ACCESS_TOKEN_TTL": "3600",
        "CELLWORK_RATE_LIMIT_RPS": "100000",
        "CELLWORK_RATE_LIMIT_BURST": "100000",
        **(env or {}),
    }
    return spec


@dataclass
class LearnfeedCell:
    """A running cell: where it answers, its users' tokens, and the CLI bound to it."""

    process: CellProcess
    http: str
    tokens: dict[str, str]
    items: list[str]
    _users: Iterator[str] = field(init=False)
    _items: Iterator[str] = field(init=False)

    def __post_init__(self) -> None:
        self._users = itertools.cycle(sorted(self.tokens))
        self._items = itertools.cycle(self.items)

    @property
    def state_dir(self) -> Path:
        return self.process.state_dir

    def nats_url(self) -> str:
        return self.process.nats_url()

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``cellwork ARGS --state-dir <this cell's>``, its output captured."""
        return subprocess.run(
            [sys.executable, "-m", "cellwork", *args, "--state-dir", str(self.state_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.process.workdir,
        )

    async def control(self, verb: str, **payload: Any) -> Any:
        """One request to the cell's supervisor over its control socket (as the CLI
        sends it, without starting a Python process for each)."""
        state = CellState.read(self.state_dir)
        return await request(state, verb, payload, timeout=15)

    async def instances(self, service: str) -> list[dict[str, Any]]:
        """The SERVING instances of ``service`` as ``cellwork status --json`` lists them."""
        status = await self.control("status")
        return [
            i for i in status["instances"] if i["service"] == service and i["status"] == "SERVING"
        ]

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def first_token(self) -> str:
        return self.tokens[min(self.tokens)]

    def stored_interactions(self) -> dict[str, int]:
        """Event ids in the recommender's interactions table (what its consumer stored)."""
        path = self.state_dir / "data" / "recommender.db"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
            rows = db.execute("SELECT event_id, COUNT(*) FROM interactions GROUP BY event_id")
            return {event_id: count for event_id, count in rows}

    async def read(self, client: LoadClient) -> Answer:
        user = next(self._users)
        try:
            status, body = await client.get("/v1/feed?limit=20", self.headers(user))
        except (HttpError, TimeoutError) as exc:
            return Answer("feed", 0, type(exc).__name__)
        return Answer("feed", status, detail=_code(status, body))

    async def home(self, client: LoadClient) -> Answer:
        """``GET /v1/home``; a 200's detail names its ``partial`` parts (comma-separated)."""
        user = next(self._users)
        try:
            status, body = await client.get("/v1/home", self.headers(user))
        except (HttpError, TimeoutError) as exc:
            return Answer("home", 0, type(exc).__name__)
        if status != 200:
            return Answer("home", status, detail=_code(status, body))
        return Answer("home", status, detail=",".join(json.loads(body).get("partial", [])))

    async def metrics(self, service: str) -> dict[str, str]:
        """The Prometheus text of each SERVING instance of ``service``, by instance id."""

        def fetch(url: str) -> str:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return str(answer.read().decode())

        found = {}
        for instance in await self.instances(service):
            url = f"http://{instance['host']}:{instance['metrics_port']}/metrics"
            found[instance["id"]] = await asyncio.to_thread(fetch, url)
        return found

    async def interact(self, client: LoadClient) -> Answer:
        user, item, key = next(self._users), next(self._items), uuid.uuid4().hex
        event_id = f"ix.{user}.{key}"
        headers = {**self.headers(user), "Idempotency-Key": key}
        try:
            status, body = await client.post(
                "/v1/interactions", {"item_id": item, "kind": "view"}, headers
            )
        except (HttpError, TimeoutError) as exc:
            return Answer("interaction", 0, type(exc).__name__, event_id)
        return Answer("interaction", status, key=event_id, detail=_code(status, body))


def _code(status: int, body: bytes) -> str:
    """The error code of a failed answer ("" for a success), as the contract writes it."""
    if status < 400:
        return ""
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return body[:80].decode(errors="replace")


def start_cell(
    workdir: Path,
    name: str,
    env: dict[str, str] | None = None,
    *,
    nats_url: str = "",
    replicas: dict[str, int] | None = None,
    supervisor: dict[str, float] | None = None,
) -> LearnfeedCell:
    """Start the demo cell on free ports; returns once every instance serves."""
    http_port, ws_port = free_port(), free_port()
    ports = {"CELLWORK_GATEWAY_PORT": str(http_port), "CELLWORK_PUSH_PORT": str(ws_port)}
    spec = cell_spec(name, {**ports, **(env or {})}, replicas, supervisor)
    if nats_url:
        spec["nats_url"] = nats_url
    http = f"http://127.0.0.1:{http_port}"
    process = CellProcess(spec, workdir, ready_urls=(f"{http}/readyz",)).start(120)
    codec = LearnfeedSettings(demo=True, access_token_ttl=3600).jwt()
    tokens = {f"chaos-{n:03d}": codec.issue(f"chaos-{n:03d}") for n in range(USERS)}
    _educators, items = demo_catalog()
    return LearnfeedCell(process, http, tokens, [item.id for item in items[:200]])


def feed_versions(state_dir: Path) -> dict[str, tuple[int, int]]:
    """Per user in feed's store: (current version number, refresh ids applied)."""
    path = state_dir / "data" / "feed.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        versions = dict(db.execute("SELECT user_id, version FROM feeds").fetchall())
        applied = dict(
            db.execute("SELECT user_id, COUNT(*) FROM feed_refreshes GROUP BY user_id").fetchall()
        )
    return {user: (int(v), int(applied.get(user, 0))) for user, v in versions.items()}


def applied_refreshes(state_dir: Path) -> dict[str, int]:
    """Refresh id -> the version it stored, in feed's store."""
    path = state_dir / "data" / "feed.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        rows = db.execute("SELECT refresh_id, version FROM feed_refreshes").fetchall()
    return {refresh_id: int(version) for refresh_id, version in rows}
