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
    # The gateway holds feed versions and items; the chart limits each pod to 512 Mi,
    # of which the process itself takes ~150 Mi.
    assert settings.gateway_feed_cache_bytes + settings.gateway_items_cache_bytes <= 256 * 2**20
    assert settings.feed_cache_bytes <= 256 * 2**20
