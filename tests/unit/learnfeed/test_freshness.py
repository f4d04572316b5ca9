"""Feed freshness, shared by feed and gateway: refresh coalescing, staleness, the
newest announced versions and the copies a gateway may serve."""

import itertools
from dataclasses import dataclass

from learnfeed.freshness import (
    CurrentVersions,
    NewestVersions,
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
