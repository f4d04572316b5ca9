"""Feed freshness, shared by feed and gateway: refresh coalescing, staleness, the
newest announced versions and the copies a gateway may serve."""

import gc
import itertools
import tracemalloc
from dataclasses import dataclass

from learnfeed.freshness import (
    NEWEST_ENTRY_BYTES,
    CurrentVersions,
    NewestVersions,
    PackedFeed,
    RefreshCoalescer,
    changed_payload,
    is_stale,
    parse_changed,
    refresh_id,
    window_of,
)


def test_reads_within_one_window_ask_for_one_refresh() -> None:
    c = RefreshCoalescer(window=10)
    times = [100 + t / 10 for t in range(300)]  # 30 s of reads, one every 0.1 s
    asked = [t for t in times if c.should_request("u", t)]
    assert len(asked) in (3, 4)  # one per 10 s window touched
    gaps = [b - a for a, b in itertools.pairwise(asked)]
    assert gaps[0] <= 10.0  # the first read may fall anywhere in its window
    assert all(abs(g - 10) < 0.11 for g in gaps[1:])
    assert c.should_request("other", 105.0) is not None  # users are independent


def test_every_instance_derives_the_same_dedupe_id_for_a_window() -> None:
    ids = {refresh_id("u", 1000 + t / 10, 10) for t in range(100)}
    assert len(ids) <= 2  # 10 s of reads span at most two of the user's windows
    assert refresh_id("u", 5000.0, 10) == RefreshCoalescer(10).should_request("u", 5000.0)


def test_the_users_windows_roll_over_at_different_times() -> None:
    # with fixed windows every user would ask at t = 10, 20, ...: a herd each window
    edges = set()
    for n in range(200):
        user = f"user-{n}"
        t = next(
            t / 100
            for t in range(1, 1001)
            if window_of(user, t / 100, 10) != window_of(user, 0, 10)
        )
        edges.add(round(t))
    assert len(edges) >= 8  # spread over the window, not all at one instant


def test_the_coalescer_stays_bounded() -> None:
    c = RefreshCoalescer(window=10, max_users=3)
    for n in range(10):
        c.should_request(f"u{n}", 1.0)
    assert len(c._asked) == 3
    assert c.should_request("u0", 1.0) is not None  # forgotten: asks again


def test_staleness() -> None:
    assert is_stale(100.0, 100.0, 10, cold=True)
    assert not is_stale(100.0, 105.0, 10, cold=False)
    assert is_stale(100.0, 111.0, 10, cold=False)


def test_the_newest_version_only_goes_up_and_stays_bounded() -> None:
    newest = NewestVersions(max_users=2)
    newest.saw("u", 3)
    newest.saw("u", 2)  # a late, older announcement changes nothing
    assert newest.newest("u") == 3
    newest.saw("v", 1)
    newest.saw("w", 1)  # over the bound: the least recently updated ("u") is forgotten
    assert newest.newest("u") == 0 and newest.newest("w") == 1


def test_changed_messages_round_trip() -> None:
    assert parse_changed(changed_payload("feed-1", 42)) == ("feed-1", 42)
    assert parse_changed(b"garbage") == ("garbage", 0)


@dataclass
class Copy:
    version: int


def test_current_versions_never_serve_or_keep_a_copy_older_than_announced() -> None:
    versions: CurrentVersions[Copy] = CurrentVersions(ttl=60)
    versions.keep("u", Copy(1))
    assert versions.get("u") == Copy(1)
    versions.announce("u", 2)  # a newer version was stored elsewhere
    assert versions.get("u") is None
    versions.keep("u", Copy(1))  # a read that began before the announcement comes back late
    assert versions.get("u") is None
    versions.keep("u", Copy(2))
    versions.announce("u", 2)  # its own announcement does not drop the current copy
    assert versions.get("u") == Copy(2)
    versions.clear()
    assert versions.get("u") is None


def test_a_packed_feed_gives_back_its_entries_page_by_page() -> None:
    entries = [(f"i{n:05d}", 1.0 - n / 128) for n in range(100)]  # exact in float32
    packed = PackedFeed.pack(3, 12.5, entries)
    assert packed is not None
    assert (packed.version, packed.generated_at, packed.total) == (3, 12.5, 100)
    assert packed.entries() == entries
    assert packed.page(0, 20) == entries[:20]
    assert packed.page(90, 20) == entries[90:]
    assert packed.page(100, 20) == packed.page(120, 5) == []
    empty = PackedFeed.pack(1, 0.0, [])
    assert empty is not None and empty.page(0, 20) == [] and empty.total == 0
    assert PackedFeed.pack(1, 0.0, [("a\x1fb", 1.0)]) is None  # ambiguous: not kept


def test_a_packed_version_costs_a_fraction_of_the_list_it_replaces() -> None:
    ids = [f"i{n:05d}" for n in range(100)]  # the catalog's ids exist anyway
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        packed = [
            PackedFeed.pack(v, 0.0, [(i, n / 100) for n, i in enumerate(ids)]) for v in range(1000)
        ]
        gc.collect()
        cost = (tracemalloc.get_traced_memory()[0] - before) / 1000
    finally:
        tracemalloc.stop()
    assert packed[0] is not None
    # The estimate the budgets rely on holds (10% for the list holding them here).
    assert cost <= packed[0].nbytes() * 1.1, cost
    assert cost < 2500  # a list of (id, score) tuples held ~14.5 KB


def test_feed_versions_kept_past_the_budget_hold_no_more_memory_than_the_budget() -> None:
    budget = 4 * 2**20
    versions: CurrentVersions[PackedFeed] = CurrentVersions(
        ttl=60, maxsize=100_000, max_bytes=budget, size=PackedFeed.nbytes
    )
    users = [f"user-{n:08d}" for n in range(6000)]
    catalog = [f"i{n:05d}" for n in range(5000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n, user in enumerate(users):
            entries = [(catalog[(n * 7 + k) % 5000], 1.0 - k / 100) for k in range(100)]
            packed = PackedFeed.pack(1, float(n), entries)
            assert packed is not None
            versions.announce(user, 1)
            versions.keep(user, packed)
        del entries, packed
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(versions) < len(users)  # the budget, not the count, bounded it
    # The kept versions stay within the budget; the newest numbers of every user seen
    # are remembered beside them (NEWEST_ENTRY_BYTES each), plus 10% for the tables.
    assert grown <= (budget + len(users) * NEWEST_ENTRY_BYTES) * 1.1, grown
