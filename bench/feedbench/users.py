"""The bench's users: sign-up, one read of each feed, and waiting for computed feeds."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from feedbench.local import FEED_PATH

PASSWORD = "bench-password-0123"


@dataclass
class User:
    user_id: str
    token: str
    version: int = 0


async def sign_up_users(base_url: str, count: int, concurrency: int = 8) -> tuple[list[User], int]:
    """Sign up ``count`` users; returns them and how many 503/504 answers were retried."""
    import httpx

    run = secrets.token_hex(4)
    sem = asyncio.Semaphore(concurrency)
    retried = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as http:

        async def one(i: int) -> User:
            nonlocal retried
            body = {"email": f"bench-{run}-{i}@example.com", "password": PASSWORD}
            body["name"] = f"Bench User {i}"
            for attempt in range(4):
                async with sem:
                    reply = await http.post("/v1/auth/signup", json=body)
                if reply.status_code in (503, 504) and attempt < 3:
                    retried += 1  # the same email again: 409 means the first try landed
                    await asyncio.sleep(0.5)
                    continue
                if reply.status_code == 409 and attempt > 0:
                    login = {"email": body["email"], "password": PASSWORD}
                    reply = await http.post("/v1/auth/login", json=login)
                break
            if reply.status_code not in (200, 201):
                raise RuntimeError(f"signup {i}: {reply.status_code} {reply.text[:300]}")
            data = reply.json()
            return User(data["user_id"], data["access_token"])

        users = list(await asyncio.gather(*(one(i) for i in range(count))))
    return users, retried


async def read_feeds(base_url: str, users: Sequence[User], concurrency: int = 16) -> bytes:
    """GET each user's feed once, noting its version; returns the last body read."""
    import httpx

    sem = asyncio.Semaphore(concurrency)
    last = b""
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as http:

        async def one(user: User) -> None:
            nonlocal last
            async with sem:
                reply = await http.get(FEED_PATH, headers={"Authorization": f"Bearer {user.token}"})
            if reply.status_code != 200:
                raise RuntimeError(f"GET {FEED_PATH}: {reply.status_code} {reply.text[:300]}")
            user.version = int(reply.json()["version"])
            last = reply.content

        await asyncio.gather(*(one(u) for u in users))
    return last


async def settle(base_url: str, users: Sequence[User], timeout: float) -> tuple[int, bytes]:
    """Re-read cold feeds until every user has a computed version; returns (cold left, body)."""
    body = await read_feeds(base_url, users)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cold = [u for u in users if u.version == 0]
        if not cold:
            break
        await asyncio.sleep(1.0)
        body = await read_feeds(base_url, cold) or body
    cold_left = sum(1 for u in users if u.version == 0)
    if cold_left < len(users):  # a computed feed's body for the ceiling
        body = await read_feeds(base_url, [next(u for u in users if u.version > 0)])
    return cold_left, body
