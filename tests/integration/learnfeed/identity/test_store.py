"""Identity's store on every database it supports: a SQLite file (the default) and the
PostgreSQL server of the machine."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cellwork import AlreadyExists, NotFound, Unauthenticated
from learnfeed.identity.store import IdentityStore, User

# ``engine`` (tests/integration/conftest.py): a fresh SQLite file, a fresh PostgreSQL database.


async def test_accounts_refresh_tokens_and_follows(engine: AsyncEngine) -> None:
    store = IdentityStore(engine)
    await store.migrate()
    user = User("u1", "a@example.org", "Ann", "hash", time.time())
    await store.create_user(user)
    with pytest.raises(AlreadyExists):
        await store.create_user(User("u2", "a@example.org", "Dup", "hash", time.time()))
    assert (await store.user_by_email("a@example.org")) == user
    with pytest.raises(NotFound):
        await store.user_by_id("nobody")

    await store.add_refresh_token("h1", "u1", "family", time.time() + 60)
    assert await store.rotate_refresh_token("h1", "h2", time.time() + 60) == "u1"
    with pytest.raises(Unauthenticated, match="already used"):
        await store.rotate_refresh_token("h1", "h3", time.time() + 60)
    with pytest.raises(Unauthenticated):  # the replay revoked the family
        await store.rotate_refresh_token("h2", "h4", time.time() + 60)
    await store.add_refresh_token("old", "u1", "other", time.time() - 1)
    with pytest.raises(Unauthenticated, match="expired"):
        await store.rotate_refresh_token("old", "h5", time.time() + 60)

    assert await store.follow("u1", "e001") is True
    assert await store.follow("u1", "e001") is False
    assert await store.follows("u1") == ["e001"]
    assert await store.unfollow("u1", "e001") is True
    assert await store.follows("u1") == []


async def test_two_concurrent_uses_of_one_refresh_token_cannot_both_win(
    engine: AsyncEngine,
) -> None:
    store = IdentityStore(engine)
    await store.migrate()
    await store.create_user(User("u1", "b@example.org", "Bo", "hash", time.time()))
    await store.add_refresh_token("t", "u1", "fam", time.time() + 60)
    results = await asyncio.gather(
        *(store.rotate_refresh_token("t", f"n{k}", time.time() + 60) for k in range(4)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if r == "u1") <= 1
    assert all(r == "u1" or isinstance(r, Unauthenticated) for r in results)


async def test_retention_deletes_a_token_family_only_once_all_its_tokens_expired(
    engine: AsyncEngine,
) -> None:
    store = IdentityStore(engine)
    await store.migrate()
    await store.create_user(User("u1", "a@example.org", "Ann", "hash", time.time()))
    now = time.time()
    # A live family: its first token was used long ago and has expired, its newest lives.
    await store.add_refresh_token("live-old", "u1", "live", now - 3600)
    await store.add_refresh_token("live-new", "u1", "live", now + 3600)
    # A family whose every token expired before the cut-off, more rows than one batch.
    for n in range(7):
        await store.add_refresh_token(f"dead{n}", "u1", "dead", now - 7200 - n)
    # Expired after the cut-off: kept a while longer.
    await store.add_refresh_token("recent", "u1", "recent", now - 60)
    assert await store.prune_refresh_tokens(before=now - 600, batch=3) == 7
    assert await store.prune_refresh_tokens(before=now - 600) == 0
    # The live family's used token still detects a replay: its family is revoked.
    await store.rotate_refresh_token("live-new", "live-next", now + 3600)
    with pytest.raises(Unauthenticated, match="already used"):
        await store.rotate_refresh_token("live-new", "x", now + 3600)
    with pytest.raises(Unauthenticated, match="unknown"):
        await store.rotate_refresh_token("dead0", "y", now + 3600)
    with pytest.raises(Unauthenticated, match="expired"):
        await store.rotate_refresh_token("recent", "z", now + 3600)
