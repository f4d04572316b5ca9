"""learnfeed's shared names: subjects parse back to the user they name."""

import pytest

from learnfeed import contract


def test_a_user_subject_parses_back_to_its_user():
    assert contract.user_of(contract.feed_ready("u-1"), contract.FEED_READY_PREFIX) == "u-1"
    assert contract.user_of(contract.feed_changed("u.2"), contract.FEED_CHANGED_PREFIX) == "u.2"


@pytest.mark.parametrize(
    "subject", ["feed.ready", "feed.ready.", "feed.readyx.u1", "other.u1", "feed.refresh.requested"]
)
def test_a_subject_of_another_shape_is_refused(subject):
    with pytest.raises(ValueError):
        contract.user_of(subject, contract.FEED_READY_PREFIX)


def test_interaction_kinds_are_the_literal_the_api_accepts():
    from learnfeed.gateway.models import InteractionBody

    assert InteractionBody.model_json_schema()["properties"]["kind"]["enum"] == list(
        contract.INTERACTION_KINDS
    )
