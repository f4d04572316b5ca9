"""RequestMetrics: what a scrape shows is exactly what was observed."""

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cellwork.observability.metrics import LATENCY_BUCKETS, RpcMetrics
from cellwork.observability.requests import RequestMetrics


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by (sample name, sorted labels)."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def http(registry: CollectorRegistry) -> RequestMetrics:
    return RequestMetrics(
        requests="t_requests_total",
        requests_help="requests",
        duration="t_duration_seconds",
        duration_help="durations",
        in_flight="t_in_flight",
        in_flight_help="in flight",
        labels=("route",),
        outcome_labels=("status",),
        buckets=(0.001, 0.01, 0.1),
        registry=registry,
    )


def test_a_scrape_shows_counts_cumulative_buckets_sum_and_in_flight():
    registry = CollectorRegistry()
    metrics = http(registry)
    for seconds, status in [(0.0005, "200"), (0.001, "200"), (0.05, "404"), (3.0, "200")]:
        metrics.observe(("/v1/feed",), (status,), seconds)
    metrics.in_flight(("/v1/feed",)).inc()
    samples = scrape(registry)
    route = (("route", "/v1/feed"),)
    assert samples[("t_requests_total", (("route", "/v1/feed"), ("status", "200")))] == 3
    assert samples[("t_requests_total", (("route", "/v1/feed"), ("status", "404")))] == 1
    buckets = {le: samples[("t_duration_seconds_bucket", (("le", le), *route))] for le in
               ("0.001", "0.01", "0.1", "+Inf")}  # fmt: skip
    assert buckets == {"0.001": 2, "0.01": 2, "0.1": 3, "+Inf": 4}  # le is inclusive
    assert samples[("t_duration_seconds_count", route)] == 4
    assert samples[("t_duration_seconds_sum", route)] == pytest.approx(3.0515)
    assert samples[("t_in_flight", route)] == 1


@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=200))
def test_each_bucket_counts_the_observations_at_or_under_its_bound(durations):
    registry = CollectorRegistry()
    metrics = RpcMetrics("server", registry)
    for seconds in durations:
        metrics.observe("echo", "Echo/Echo", "OK", seconds)
    samples = scrape(registry)
    labels = (("method", "Echo/Echo"), ("service", "echo"))
    for bound in LATENCY_BUCKETS:
        key = ("cellwork_rpc_server_duration_seconds_bucket", (("le", str(bound)), *labels))
        assert samples.get(key, 0) == sum(1 for d in durations if d <= bound)
    assert metrics.count("echo", "Echo/Echo", "OK") == len(durations)


def test_observations_from_many_threads_are_all_counted():
    registry = CollectorRegistry()
    metrics = http(registry)

    def hammer() -> None:
        for _ in range(20_000):
            metrics.observe(("/x",), ("200",), 0.002)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metrics.requests_total(("/x",), ("200",)) == 80_000
    assert scrape(registry)[("t_duration_seconds_count", (("route", "/x"),))] == 80_000


def test_the_same_names_cannot_be_registered_twice():
    registry = CollectorRegistry()
    http(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        http(registry)


def test_buckets_must_increase():
    with pytest.raises(ValueError):
        RequestMetrics(
            requests="a_total",
            requests_help="",
            duration="b",
            duration_help="",
            labels=(),
            outcome_labels=(),
            buckets=(0.1, 0.01),
            registry=None,
        )
