"""Feed's pure rules: bursts of interactions counted per user."""

from learnfeed.feed.domain import BurstCounter


def test_a_burst_is_counted_per_user_and_resets() -> None:
    b = BurstCounter(threshold=3)
    assert [b.add("u") for _ in range(3)] == [False, False, True]
    assert b.add("v") is False
    assert [b.add("u") for _ in range(3)] == [False, False, True]
