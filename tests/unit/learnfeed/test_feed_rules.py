"""Feed's rules: refresh coalescing, bursts, staleness; identity's input rules; cursors."""

import pytest

from cellwork import InvalidArgument
from learnfeed.feed.domain import BurstCounter, RefreshCoalescer, is_stale, refresh_id
from learnfeed.feed.service import interleave
from learnfeed.gateway.app import decode_cursor, encode_cursor
from learnfeed.identity import domain as identity


def test_reads_within_one_window_ask_for_one_refresh() -> None:
    c = RefreshCoalescer(window=10)
    assert c.should_request("u", 100.0) == "refresh.u.10"
    assert c.should_request("u", 105.0) is None
    assert c.should_request("u", 109.9) is None
    assert c.should_request("other", 105.0) == "refresh.other.10"
    assert c.should_request("u", 110.0) == "refresh.u.11"


def test_every_instance_derives_the_same_dedupe_id_for_a_window() -> None:
    assert refresh_id("u", 101.0, 10) == refresh_id("u", 109.0, 10) != refresh_id("u", 111.0, 10)


def test_the_coalescer_stays_bounded() -> None:
    c = RefreshCoalescer(window=10, max_users=3)
    for n in range(10):
        c.should_request(f"u{n}", 1.0)
    assert len(c._asked) == 3
    assert c.should_request("u0", 1.0) is not None  # forgotten: asks again


def test_a_burst_is_counted_per_user_and_resets() -> None:
    b = BurstCounter(threshold=3)
    assert [b.add("u") for _ in range(3)] == [False, False, True]
    assert b.add("v") is False
    assert [b.add("u") for _ in range(3)] == [False, False, True]


def test_staleness() -> None:
    assert is_stale(100.0, 100.0, 10, cold=True)
    assert not is_stale(100.0, 105.0, 10, cold=False)
    assert is_stale(100.0, 111.0, 10, cold=False)


def test_interleave_alternates_without_repeats() -> None:
    assert interleave(["a", "b", "c"], ["x", "a", "y"], size=10) == ["a", "x", "b", "c", "y"]
    assert interleave([], ["x", "y"], size=1) == ["x"]


def test_cursors_round_trip_and_bad_ones_are_invalid_arguments() -> None:
    assert decode_cursor(encode_cursor(7, 40)) == 40
    for bad in ("%%%", "abc", encode_cursor(1, -5), "MTox"[:3]):
        with pytest.raises(InvalidArgument):
            decode_cursor(bad)


def test_identity_input_rules() -> None:
    assert identity.normalize_email("  Ann@Example.ORG ") == "ann@example.org"
    for bad in ("no-at", "a@b", "a b@c.de", "@c.de"):
        with pytest.raises(InvalidArgument):
            identity.normalize_email(bad)
    with pytest.raises(InvalidArgument):
        identity.check_password("short")
    with pytest.raises(InvalidArgument):
        identity.check_name("   ")
    token = identity.new_refresh_token()
    assert identity.hash_refresh_token(token) != token and len(token) >= 40
