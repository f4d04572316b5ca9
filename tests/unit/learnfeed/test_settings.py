"""learnfeed's settings refuse values that would break a promise, with a clear message."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from learnfeed import contract
from learnfeed.settings import LearnfeedSettings


def test_interactions_are_kept_longer_than_an_event_can_be_redelivered() -> None:
    assert LearnfeedSettings().interactions_retention >= contract.INTERACTION_REDELIVERY_HORIZON
    with pytest.raises(ValidationError, match="deduped by event id"):
        LearnfeedSettings(interactions_retention=7 * 86400.0)


def test_cache_budgets_fit_the_charts_memory_limit() -> None:
    settings = LearnfeedSettings()
    # The gateway holds feed versions, items and each user's last feed; the chart limits
    # each pod to 512 Mi, of which the process itself takes ~150 Mi.
    gateway = (
        settings.gateway_feed_cache_bytes
        + settings.gateway_items_cache_bytes
        + settings.gateway_last_feeds_bytes
    )
    assert gateway <= 256 * 2**20
    assert settings.feed_cache_bytes <= 256 * 2**20


def test_a_feed_page_is_enriched_within_a_home_part() -> None:
    settings = LearnfeedSettings()
    assert settings.gateway_enrich_timeout < settings.part_deadline
    with pytest.raises(ValidationError, match="below part_deadline"):
        LearnfeedSettings(gateway_enrich_timeout=0.3, part_deadline=0.3)
    assert LearnfeedSettings(gateway_enrich_timeout=0.5, part_deadline=1.0)
