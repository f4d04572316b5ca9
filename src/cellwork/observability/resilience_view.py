"""What a cell's call pipeline is doing now, read from its instances' metrics.

``cellwork status`` shows it under the instances: per caller and target service, the
circuit breaker's state, the endpoints ejected, the retries made and refused for want
of budget, the calls the caller refused itself; per serving method, its adaptive
concurrency limit and the calls it shed. Each instance already exports all of it on its
metrics port, so the view is a scrape and a sum: no extra state in the instances, and
the same figures a Prometheus would show.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from cellwork.observability.metrics import (
    BALANCER_EJECTED,
    BREAKER_STATE,
    RPC_CLIENT_BUDGET_EXHAUSTED,
    RPC_CLIENT_REJECTED,
    RPC_CLIENT_RETRIES,
)
from cellwork.rpc.shedding import RPC_SERVER_CONCURRENCY_LIMIT, RPC_SERVER_SHED

BREAKER_STATES = ("closed", "half-open", "open")
SCRAPE_TIMEOUT = 1.0  # seconds per instance: a hung instance must not hold the status


@dataclass(frozen=True, slots=True)
class CallsRow:
    """One caller service's calls to one target service, summed over its instances."""

    caller: str
    target: str
    breaker: str  # the worst state among the caller's instances
    open_breakers: int
    ejected: int
    retries: int
    budget_exhausted: int
    rejected: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SheddingRow:
    """One served method of one service: its limits across instances, what it shed."""

    service: str
    method: str
    limit_min: int
    limit_max: int
    shed: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _samples(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, sample.labels, sample.value


def summarize(
    texts: Mapping[tuple[str, str], str],
) -> tuple[list[CallsRow], list[SheddingRow]]:
    """The rows for ``texts``: Prometheus text by (service, instance id). Pure."""
    calls: dict[tuple[str, str], dict[str, float]] = {}
    limits: dict[tuple[str, str], list[float]] = {}
    shed: dict[tuple[str, str], float] = {}
    for (service, _instance), text in texts.items():
        for name, labels, value in _samples(text):
            if name == RPC_SERVER_CONCURRENCY_LIMIT:
                limits.setdefault((service, labels.get("method", "")), []).append(value)
                continue
            if name == RPC_SERVER_SHED:
                key = (service, labels.get("method", ""))
                shed[key] = shed.get(key, 0.0) + value
                continue
            target = labels.get("service")
            if target is None:
                continue
            row = calls.setdefault((service, target), {})
            if name == BREAKER_STATE:
                row["state"] = max(row.get("state", 0.0), value)
                row["open"] = row.get("open", 0.0) + (value == 2)
            elif name == BALANCER_EJECTED:
                row["ejected"] = row.get("ejected", 0.0) + value
            elif name == RPC_CLIENT_RETRIES:
                row["retries"] = row.get("retries", 0.0) + value
            elif name == RPC_CLIENT_BUDGET_EXHAUSTED:
                row["budget"] = row.get("budget", 0.0) + value
            elif name == RPC_CLIENT_REJECTED:
                row["rejected"] = row.get("rejected", 0.0) + value
    calls_rows = [
        CallsRow(
            caller,
            target,
            BREAKER_STATES[min(int(row.get("state", 0)), 2)],
            int(row.get("open", 0)),
            int(row.get("ejected", 0)),
            int(row.get("retries", 0)),
            int(row.get("budget", 0)),
            int(row.get("rejected", 0)),
        )
        for (caller, target), row in sorted(calls.items())
        if "state" in row  # a client of that target exists (not a server-side label)
    ]
    shedding_rows = [
        SheddingRow(
            service,
            method,
            int(min(limits.get((service, method), [0.0]))),
            int(max(limits.get((service, method), [0.0]))),
            int(shed.get((service, method), 0.0)),
        )
        for service, method in sorted(set(limits) | set(shed))
    ]
    return calls_rows, shedding_rows


async def scrape(instances: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """The metrics text of each instance (``cellwork status --json``'s records) that has a
    metrics port and answers within ``SCRAPE_TIMEOUT``; the others are left out."""

    def fetch(url: str) -> str:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as answer:
            return str(answer.read().decode())

    targets = [
        ((str(i["service"]), str(i["id"])), f"http://{i['host']}:{i['metrics_port']}/metrics")
        for i in instances
        if i.get("metrics_port") and i.get("host")
    ]
    texts = await asyncio.gather(
        *(asyncio.to_thread(fetch, url) for _key, url in targets), return_exceptions=True
    )
    return {
        key: text for (key, _url), text in zip(targets, texts, strict=True) if isinstance(text, str)
    }
