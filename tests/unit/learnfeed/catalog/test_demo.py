"""The demo catalog: the same educators and items on every machine and every run."""

from learnfeed.catalog.demo import demo_catalog


def test_the_demo_catalog_is_deterministic() -> None:
    educators, items = demo_catalog()
    assert len(educators) == 50 and len(items) >= 5000
    assert demo_catalog()[1][1234] == items[1234]
