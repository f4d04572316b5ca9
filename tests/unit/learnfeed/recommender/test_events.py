"""The id a refresh is stored under: its event id, or a digest of an event without one."""

from __future__ import annotations

from cellwork.events import Delivery
from learnfeed.recommender.events import refresh_id_of


def test_a_refresh_is_named_by_its_event_id() -> None:
    assert refresh_id_of(Delivery("feed.refresh.requested", b"x", 1, "refresh.u.7")) == (
        "refresh.u.7"
    )


def test_a_refresh_without_an_event_id_is_named_by_its_bytes_the_same_on_redelivery() -> None:
    first = refresh_id_of(Delivery("feed.refresh.requested", b"x", 1, ""))
    again = refresh_id_of(Delivery("feed.refresh.requested", b"x", 2, ""))
    other = refresh_id_of(Delivery("feed.refresh.requested", b"y", 1, ""))
    assert first == again != other and first.startswith("sha256.")
