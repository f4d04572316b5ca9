"""The status view of the call pipeline: instances' metrics summed per caller and target,
and per served method."""

from __future__ import annotations

from cellwork.observability.resilience_view import CallsRow, SheddingRow, summarize

GATEWAY_0 = """\
# TYPE cellwork_breaker_state gauge
cellwork_breaker_state{service="feed"} 0.0
cellwork_breaker_state{service="catalog"} 2.0
# TYPE cellwork_balancer_ejected_endpoints gauge
cellwork_balancer_ejected_endpoints{service="feed"} 1.0
# TYPE cellwork_rpc_client_retries_total counter
cellwork_rpc_client_retries_total{reason="unavailable",service="feed"} 3.0
cellwork_rpc_client_retries_total{reason="not_connected",service="feed"} 2.0
# TYPE cellwork_rpc_client_rejected_total counter
cellwork_rpc_client_rejected_total{reason="breaker_open",service="catalog"} 40.0
# TYPE cellwork_rpc_server_requests_total counter
cellwork_rpc_server_requests_total{code="OK",method="Feed/GetFeed",service="gateway"} 9.0
"""
GATEWAY_1 = """\
# TYPE cellwork_breaker_state gauge
cellwork_breaker_state{service="feed"} 1.0
cellwork_breaker_state{service="catalog"} 0.0
# TYPE cellwork_rpc_client_retry_budget_exhausted_total counter
cellwork_rpc_client_retry_budget_exhausted_total{service="feed"} 4.0
"""
FEED_0 = """\
# TYPE cellwork_rpc_server_concurrency_limit gauge
cellwork_rpc_server_concurrency_limit{method="Feed/GetFeed",service="feed"} 20.0
# TYPE cellwork_rpc_server_shed_total counter
cellwork_rpc_server_shed_total{method="Feed/GetFeed",service="feed"} 7.0
"""
FEED_1 = """\
# TYPE cellwork_rpc_server_concurrency_limit gauge
cellwork_rpc_server_concurrency_limit{method="Feed/GetFeed",service="feed"} 100.0
"""


def test_calls_are_summed_per_caller_and_target_with_the_worst_breaker() -> None:
    calls, _ = summarize({("gateway", "gateway-0"): GATEWAY_0, ("gateway", "gateway-1"): GATEWAY_1})
    assert calls == [
        CallsRow("gateway", "catalog", "open", 1, 0, 0, 0, 40),
        CallsRow("gateway", "feed", "half-open", 0, 1, 5, 4, 0),
    ]


def test_served_methods_show_their_limits_across_instances_and_what_they_shed() -> None:
    _, shedding = summarize({("feed", "feed-0"): FEED_0, ("feed", "feed-1"): FEED_1})
    assert shedding == [SheddingRow("feed", "Feed/GetFeed", 20, 100, 7)]


def test_a_server_only_instance_has_no_calls_rows() -> None:
    calls, _ = summarize({("feed", "feed-0"): FEED_0})
    assert calls == []
