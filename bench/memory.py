"""Memory benchmark: RSS of a gateway and a feed instance against the number of users read.

One run, from the repository root:

    .venv/bin/python bench/memory.py [--points 0,10000,50000,100000,200000 --concurrency 32]

What it does:

1. writes one feed version (100 items of the demo catalog) for each of the largest
   point's users straight into feed's SQLite database, in a temp state directory,
   before the cell starts (feed's own migrations create the table first);
2. starts a cell of one gateway, one feed, one catalog and one identity (no
   recommender: nothing replaces the seeded versions while the bench reads; refresh
   requests still go to the stream, as in production) with ``CellProcess``, the demo
   catalog and a per-user rate limit too high to throttle;
3. mints each user's access token in-process with the cell's signing key;
4. for each point, reads ``GET /v1/feed?limit=20`` once for every user not read yet
   (``--concurrency`` keep-alive connections, one request at a time each), then
   prints the RSS of the gateway and the feed instance (``/proc/<pid>/status``), the
   read rate and the non-200 answers.

Every user's first read misses the gateway's copy and feed's: the gateway keeps the
version it got, feed the one it read from its database, so RSS shows what each
keeps per user, and where their byte budgets (``CELLWORK_GATEWAY_FEED_CACHE_BYTES``,
``CELLWORK_FEED_CACHE_BYTES``) stop the growth. The processes it starts are stopped
on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
from feedbench.local import FEED_PATH, HOST, free_port

from cellwork.data import open_engine, sqlite_url
from cellwork.testing.cell import CellProcess
from learnfeed.feed.store import FeedStore
from learnfeed.settings import LearnfeedSettings

CATALOG_ITEMS = 5000  # the demo catalog's lessons and posts: i00000 ... i04999
FEED_ITEMS = 100


def user_id(n: int) -> str:
    return f"bench-user-{n:07d}"


def version_items(n: int) -> bytes:
    """User ``n``'s ranked items: 100 ids of the demo catalog, spread over all of it."""
    start = (n * 37) % CATALOG_ITEMS
    return orjson.dumps(
        [(f"i{(start + k) % CATALOG_ITEMS:05d}", 1.0 - k / 128) for k in range(FEED_ITEMS)]
    )


async def seed_versions(state_dir: Path, users: int) -> float:
    """One version for each of ``users`` users in feed's database; seconds it took."""
    started = time.monotonic()
    url = sqlite_url(state_dir, "feed")
    engine = open_engine(url)
    try:
        await FeedStore(engine).migrate()
    finally:
        await engine.dispose()
    # Straight through sqlite3: one transaction of plain inserts is what makes 200k fast.
    db = sqlite3.connect(url.split("///", 1)[1])
    try:
        now = time.time()
        db.executemany(
            "INSERT INTO feeds VALUES (?, 1, ?, ?)",
            ((user_id(n), now, version_items(n)) for n in range(users)),
        )
        db.commit()
    finally:
        db.close()
    return time.monotonic() - started


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def read_feeds(
    port: int, tokens: list[str], concurrency: int
) -> tuple[int, Counter[int], float]:
    """Read each token's feed once: (answers, count of each non-200 status, seconds).

    A minimal HTTP/1.1 client over keep-alive connections: httpx spent ~1 ms of this
    machine's CPU a request, more than the gateway, and wrk cannot stop after each
    user was read once.
    """
    queue = iter(tokens)
    bad: Counter[int] = Counter()
    started = time.monotonic()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            for token in queue:
                writer.write(
                    f"GET {FEED_PATH} HTTP/1.1\r\nHost: {HOST}\r\n"
                    f"Authorization: Bearer {token}\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if status != 200:
                    bad[status] += 1
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(tokens), bad, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--points", default="0,10000,50000,100000,200000")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    try:
        points = sorted({int(p) for p in args.points.split(",")})
    except ValueError:
        parser.error("--points takes user counts separated by commas, e.g. 0,10000,50000")
    if not points or points[0] < 0:
        parser.error("--points takes user counts >= 0")
    most = points[-1]
    settings = LearnfeedSettings(demo=True)
    codec = settings.jwt()
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        workdir = Path(tmp)
        seeded = asyncio.run(seed_versions(workdir / "state", most))
        print(f"seeded {most:,} feed versions in {seeded:.0f} s", flush=True)
        tokens = [codec.issue(user_id(n)) for n in range(most)]
        port = free_port()
        spec = {
            "name": "memory-bench",
            "services": {
                name: {"module": f"learnfeed.{name}", "replicas": 1}
                for name in ("identity", "catalog", "feed", "gateway")
            },
        }
        env = {
            "CELLWORK_GATEWAY_PORT": str(port),
            "CELLWORK_PUSH_PORT": str(free_port()),
            "CELLWORK_RATE_LIMIT_RPS": "100000",
            "CELLWORK_RATE_LIMIT_BURST": "100000",
            "CELLWORK_LOG_LEVEL": "warning",
        }
        base_url = f"http://{HOST}:{port}"
        cell = CellProcess(spec, workdir, ready_urls=(f"{base_url}/readyz",), env=env)
        with cell.start(timeout=120.0):
            pids = {row["service"]: int(row["pid"]) for row in cell.instances()}
            rows: list[tuple[int, float, float, str, str]] = []
            done = 0
            for point in points:
                answers, bad, seconds = asyncio.run(
                    read_feeds(port, tokens[done:point], args.concurrency)
                )
                done = point
                rate = f"{answers / seconds:,.0f}/s" if answers else "-"
                statuses = ", ".join(f"{n} x {code}" for code, n in sorted(bad.items())) or "0"
                rows.append(
                    (point, rss_mib(pids["gateway"]), rss_mib(pids["feed"]), rate, statuses)
                )
                print(
                    f"{point:>9,} users: gateway {rows[-1][1]:.0f} MiB, feed {rows[-1][2]:.0f} MiB",
                    flush=True,
                )
    print()
    print("| users read | gateway RSS | feed RSS | reads | non-200 |")
    print("| --- | --- | --- | --- | --- |")
    for point, gateway, feed, rate, bad in rows:
        print(f"| {point:,} | {gateway:.0f} MiB | {feed:.0f} MiB | {rate} | {bad} |")


if __name__ == "__main__":
    main()
