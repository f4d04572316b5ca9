"""Each store records its migrations under the name its service runs as."""

import pytest

from learnfeed.catalog import service as catalog_service
from learnfeed.catalog import store as catalog_store
from learnfeed.feed import service as feed_service
from learnfeed.feed import store as feed_store
from learnfeed.identity import service as identity_service
from learnfeed.identity import store as identity_store
from learnfeed.recommender import service as recommender_service
from learnfeed.recommender import store as recommender_store


@pytest.mark.parametrize(
    ("store", "service"),
    [
        (catalog_store, catalog_service),
        (feed_store, feed_service),
        (identity_store, identity_service),
        (recommender_store, recommender_service),
    ],
)
def test_a_store_records_its_migrations_under_its_services_name(store, service) -> None:
    assert store.SERVICE_NAME == service.SERVICE_NAME
