"""The cold-start feed of a user with none yet: popular and recent items, interleaved."""

from learnfeed.feed.service import interleave


def test_interleave_alternates_without_repeats() -> None:
    assert interleave(["a", "b", "c"], ["x", "a", "y"], size=10) == ["a", "x", "b", "c", "y"]
    assert interleave([], ["x", "y"], size=1) == ["x"]
