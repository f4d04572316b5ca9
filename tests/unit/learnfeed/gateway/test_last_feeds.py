"""The feed each user was last served: runs of pages joined per version, answered again
as GetFeed's fallback (stale), bounded by bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork import Internal, Unavailable
from learnfeed.freshness import PackedFeed
from learnfeed.gateway.last_feeds import (
    MAX_RUN,
    STALE_FEEDS,
    KnownRun,
    LastFeeds,
    LastKnownPage,
    joined,
)


def version(number: int, size: int) -> list[tuple[str, float]]:
    """A ranked version: ids tell the version and the rank; scores are float32-exact."""
    return [(f"v{number}-{n:03d}", 1.0 - n / 1024) for n in range(size)]


def run_of(
    number: int, entries: list[tuple[str, float]], offset: int, limit: int, generated: float
) -> KnownRun:
    packed = PackedFeed.pack(number, generated, entries[offset : offset + limit])
    assert packed is not None
    return KnownRun(packed, offset, len(entries))


def test_pages_of_one_version_that_touch_join_into_one_run() -> None:
    ranked = version(1, 60)
    feeds = LastFeeds(max_bytes=2**20)
    feeds.remember("u", run_of(1, ranked, 0, 20, 1000.0), now=0.0)
    feeds.remember("u", run_of(1, ranked, 20, 20, 1000.0), now=1.0)
    run = feeds.run("u", now=2.0)
    assert run is not None and (run.start, run.end, run.total) == (0, 40, 60)
    assert run.page(0, 20) == ranked[:20]
    assert run.page(20, 20) == ranked[20:40]
    assert run.page(30, 20) == ranked[30:40]  # a short page at the run's end
    assert run.page(40, 20) is None  # nothing known there


def test_a_page_of_another_version_or_apart_from_the_run_replaces_it() -> None:
    first, second = version(1, 60), version(2, 60)
    kept = run_of(1, first, 0, 20, 1000.0)
    newer = run_of(2, second, 0, 20, 2000.0)
    assert joined(kept, newer) is newer
    apart = run_of(1, first, 40, 20, 1000.0)
    assert joined(kept, apart) is apart
    # Cold-start feeds are all version 0: their generation time tells them apart.
    cold_then, cold_now = run_of(0, first, 0, 20, 1.0), run_of(0, first, 20, 20, 2.0)
    assert joined(cold_then, cold_now) is cold_now


def test_the_end_of_a_version_known_to_the_end_is_an_empty_page() -> None:
    ranked = version(1, 30)
    run = run_of(1, ranked, 0, 30, 1000.0)
    assert run.page(30, 20) == []
    empty = KnownRun(PackedFeed.pack(1, 1000.0, []) or pytest.fail("packed"), 0, 0)
    assert empty.page(0, 20) == []


def test_last_feeds_stay_within_their_byte_budget() -> None:
    budget = 2**20
    feeds = LastFeeds(max_bytes=budget)
    for n in range(5000):
        feeds.remember_page(f"user-{n}", 1, 1000.0, 0, version(1, 20), 100, now=float(n))
    assert feeds.nbytes <= budget
    assert 0 < len(feeds) < 5000  # the oldest users went first
    assert feeds.run("user-4999", now=5000.0) is not None
    assert feeds.run("user-0", now=5000.0) is None


def test_a_last_feed_lives_its_ttl() -> None:
    feeds = LastFeeds(max_bytes=2**20, ttl=100.0)
    feeds.remember_page("u", 1, 1000.0, 0, version(1, 20), 20, now=0.0)
    assert feeds.run("u", now=99.0) is not None
    assert feeds.run("u", now=100.0) is None


pages = st.tuples(
    st.integers(min_value=0, max_value=3),  # which version
    st.integers(min_value=0, max_value=150),  # offset
    st.integers(min_value=1, max_value=100),  # limit (GetFeed's largest page is 100)
)


@given(st.lists(pages, min_size=1, max_size=25))
def test_what_is_kept_is_always_the_last_served_version_as_it_was_ranked(
    served: list[tuple[int, int, int]],
) -> None:
    versions = {n: version(n, 40 + 37 * n) for n in range(4)}
    feeds = LastFeeds(max_bytes=2**24)
    for number, offset, limit in served:
        ranked = versions[number]
        if offset >= len(ranked):
            continue
        feeds.remember_page(
            "u", number, 1000.0 + number, offset, ranked[offset : offset + limit], len(ranked)
        )
        run = feeds.run("u", now=0.0)
        assert run is not None
        assert run.feed.version == number and run.total == len(ranked)
        assert run.start <= offset and min(offset + limit, len(ranked)) <= run.end
        assert run.end - run.start <= MAX_RUN
        # Every page the run answers is the version's own, entry for entry.
        for at in range(run.start, run.end):
            assert run.page(at, 20) == ranked[at : min(at + 20, run.end)]


async def test_the_fallback_answers_the_last_known_page_marked_stale() -> None:
    ranked = version(3, 40)
    feeds = LastFeeds(max_bytes=2**20)
    feeds.remember_page("u", 3, 1234.5, 0, ranked[:20], 40)
    before = STALE_FEEDS.labels("unavailable")._value.get()

    fallback = LastKnownPage(feeds, "u", 10, 5)
    page = await fallback(Unavailable("no serving instance of feed"))
    assert fallback.served
    assert (page.version, page.generated_at, page.stale, page.total) == (3, 1234.5, True, 40)
    assert [(i.item_id, i.score) for i in page.items] == ranked[10:15]
    assert STALE_FEEDS.labels("unavailable")._value.get() == before + 1


async def test_the_fallback_raises_the_error_when_nothing_is_known_at_that_offset() -> None:
    feeds = LastFeeds(max_bytes=2**20)
    feeds.remember_page("u", 3, 1234.5, 0, version(3, 40)[:20], 40)
    error = Internal("feed broke")
    for user, offset in (("someone-else", 0), ("u", 20)):
        fallback = LastKnownPage(feeds, user, offset, 20)
        with pytest.raises(Internal) as raised:
            await fallback(error)
        assert raised.value is error
        assert not fallback.served


def test_a_page_already_known_costs_no_new_entry() -> None:
    ranked = version(1, 40)
    feeds = LastFeeds(max_bytes=2**20)
    feeds.remember_page("u", 1, 1000.0, 0, ranked[:20], 40, now=0.0)
    kept = feeds.run("u", now=0.0)
    feeds.remember_page("u", 1, 1000.0, 5, ranked[5:15], 40, now=1.0)
    assert feeds.run("u", now=1.0) is kept  # the same object: nothing was packed or put
