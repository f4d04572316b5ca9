"""The Prometheus rules and the Grafana dashboard: checked and unit-tested with promtool,
and every metric they name checked against what a running learnfeed cell really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cellwork.testing import CellProcess, free_port

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy/prometheus"
RULES = PROMETHEUS / "rules.yaml"
DASHBOARD = REPO / "deploy/grafana/cellwork-dashboard.json"

# Series that come from elsewhere: Prometheus itself, kube-state-metrics, the NATS exporter.
EXTERNAL = re.compile(r"^(up|kube_\w+|nats_\w+)$")
# The sample names a family of each type exposes (a counter family is named without _total).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "info": ("_info",),
}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "atan2", "inf", "nan",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return path


def run_promtool(*args: str) -> None:
    out = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr


def metric_names(expr: str) -> set[str]:
    """The metric (and recording-rule) names a PromQL expression selects."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # label values and string arguments
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][\w:]*", expr):
        word = match.group()
        if word.lower() in PROMQL_WORDS or expr[match.end() :].lstrip().startswith("("):
            continue  # an operator, a keyword or a function
        names.add(word)
    return names


def test_metric_names_parses_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (service, le) (rate(a_bucket{le="0.25",x=~"$v"}'
        "[5m]))) / on (service) group_left b:c:rate5m > 14.4 * 1e-2 and max(d offset 15m)"
        ' or sum(rate(e[$__rate_interval])) unless label_replace(f, "g", "h", "i", "j")'
    )
    assert metric_names(expr) == {"a_bucket", "b:c:rate5m", "d", "e", "f"}


def rule_file() -> dict:
    return yaml.safe_load(RULES.read_text())


def rules_exprs() -> tuple[set[str], list[str]]:
    """(recording-rule names, every rule expression) of rules.yaml."""
    recorded, exprs = set(), []
    for group in rule_file()["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                recorded.add(rule["record"])
            exprs.append(rule["expr"])
    return recorded, exprs


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels of a collapsed row
    return [p for p in panels if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels() for t in p["targets"]]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            exprs.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query))
    return exprs


def test_rules_pass_promtool_check() -> None:
    run_promtool("check", "rules", str(RULES))


def test_rules_unit_tests_pass() -> None:
    run_promtool("test", "rules", str(PROMETHEUS / "rules_test.yaml"))


def test_prometheus_config_is_valid() -> None:
    run_promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))


def test_rules_are_named_by_convention_and_alerts_are_annotated() -> None:
    recorded, _ = rules_exprs()
    assert all(re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", name) for name in recorded)
    alerts = [r for g in rule_file()["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 10
    for alert in alerts:
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]
        assert {"summary", "description"} <= alert["annotations"].keys(), alert["alert"]
    tested = {
        test["alertname"]
        for test in yaml.safe_load((PROMETHEUS / "rules_test.yaml").read_text())["tests"]
        for test in test.get("alert_rule_test", [])
        if test["exp_alerts"]
    }
    assert tested == {a["alert"] for a in alerts}  # every alert is seen firing in a test


def test_dashboard_panels_and_variables() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["service"]["query"]["query"].startswith("label_values(")
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        assert panel["targets"], f"panel {panel['title']!r} has no target"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_uses_only_recorded_rules_that_exist() -> None:
    recorded, _ = rules_exprs()
    used = {n for e in dashboard_exprs() for n in metric_names(e) if ":" in n}
    assert used, "the dashboard reads no recording rule"
    assert used <= recorded, sorted(used - recorded)


# The live cell: every metric the rules and the dashboard name must be exported.


@pytest.fixture(scope="module")
def scrapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """/metrics of every instance of a running learnfeed cell (one of each), after traffic,
    keyed by where it came from."""
    spec = yaml.safe_load((REPO / "src/learnfeed/cell.yaml").read_text())
    http_port, ws_port = free_port(), free_port()
    spec["name"] = "obs"
    spec["env"] = {"CELLWORK_GATEWAY_PORT": str(http_port), "CELLWORK_PUSH_PORT": str(ws_port)}
    for service in spec["services"].values():
        service["replicas"] = 1
    http = f"http://127.0.0.1:{http_port}"
    cell = CellProcess(spec, tmp_path_factory.mktemp("observed"), ready_urls=(f"{http}/readyz",))
    with cell:
        rows = cell.instances()
        with httpx.Client(base_url=http, timeout=10) as client:
            r = client.post(
                "/v1/auth/signup",
                json={"email": "metrics@example.org", "password": "correct horse", "name": "M"},
            )
            assert r.status_code == 201, r.text
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            for _ in range(3):
                assert client.get("/v1/feed", headers=auth).status_code == 200
                assert client.get("/v1/me", headers=auth).status_code == 200
            assert client.get("/v1/me").status_code == 401
        texts = {}
        for row in rows:
            url = f"http://127.0.0.1:{row['metrics_port']}/metrics"
            texts[row["id"]] = httpx.get(url, timeout=5).raise_for_status().text
        for name, port in (("gateway-http", http_port), ("push-http", ws_port)):
            url = f"http://127.0.0.1:{port}/metrics"
            texts[name] = httpx.get(url, timeout=5).raise_for_status().text
        yield texts


def exported(texts: dict[str, str]) -> tuple[set[str], set[str]]:
    """(names declared by the scrapes' families, names that have samples)."""
    declared, sampled = set(), set()
    for text in texts.values():
        for family in text_string_to_metric_families(text):
            suffixes = SUFFIXES.get(family.type, ("",))
            declared.update(family.name + suffix for suffix in suffixes)
            sampled.update(sample.name for sample in family.samples)
    return declared, sampled


def test_the_cell_exports_every_metric_the_rules_and_dashboard_use(
    scrapes: dict[str, str],
) -> None:
    declared, sampled = exported(scrapes)
    recorded, rule_exprs = rules_exprs()
    used = {n for e in [*rule_exprs, *dashboard_exprs()] for n in metric_names(e)}
    assert {n for n in used if ":" in n} <= recorded
    own = {n for n in used if ":" not in n and not EXTERNAL.match(n)}
    assert own, "the rules and the dashboard name no metric of the services"
    missing = own - declared - sampled
    assert not missing, f"not exported by any instance: {sorted(missing)}"
    # The traffic above left samples in the series the RED rules are made of.
    for name in (
        "cellwork_rpc_server_requests_total",
        "cellwork_rpc_server_duration_seconds_bucket",
        "cellwork_rpc_server_duration_seconds_count",
        "cellwork_http_requests_total",
        "cellwork_http_duration_seconds_bucket",
        "cellwork_http_duration_seconds_count",
        "cellwork_balancer_endpoints",
        "learnfeed_push_connections",
        "process_start_time_seconds",
    ):
        assert name in sampled, f"no sample of {name}"
    # The latency SLO reads the le="0.25" bucket: it must be one of the buckets.
    assert 'le="0.25"' in scrapes["gateway-http"]
    # gateway and push serve the same registry on their HTTP ports.
    assert "cellwork_http_requests_total{" in scrapes["gateway-http"]
    assert "learnfeed_push_connections " in scrapes["push-http"]
