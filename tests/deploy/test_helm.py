"""The Helm chart (deploy/helm/cellwork), linted and rendered by Helm's own Go SDK
(helm-python-sdk, Helm v4, no helm binary), every built-in object validated against the
Kubernetes API schema of KUBERNETES (kubernetes-validate, strict: unknown fields fail).

The NATS dependency cannot be fetched here: every render leaves it out
(``nats.enabled: false``, ``natsUrl`` set) unless it only looks at names the chart
derives from it. kubernetes-validate has no schemas for custom resources: the
ServiceMonitor and the KEDA ScaledObject are skipped there, explicitly, and checked
field by field instead.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from typing import Any

# Both are dev dependencies (pyproject): a missing one is a broken install, not a skip.
import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from .conftest import DEPLOY

CHART = DEPLOY / "helm" / "cellwork"
KUBERNETES = "1.31"
RELEASE, NAMESPACE = "learnfeed", "apps"
KINDS = {
    "identity": "grpc",
    "catalog": "grpc",
    "feed": "grpc",
    "recommender": "grpc",
    "gateway": "http",
    "push": "http",
}
HTTP_PORTS = {"gateway": 8080, "push": 8081}
GRPC_PORT, METRICS_PORT = 50051, 9090
# Custom resources: no schema in kubernetes-validate, checked by the tests below.
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
MISSING_DEPENDENCY = "chart directory is missing these dependencies: nats"

JWT_KEYS = "k1:" + "s" * 40
OFFLINE = {"nats": {"enabled": False}, "natsUrl": "nats://nats:4222"}


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Values files layered as ``helm -f a -f b`` does: maps merge, the rest replaces."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def load_values(file: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / file).read_text())
    return values


def chart_values() -> dict[str, Any]:
    return load_values("values.yaml")


def production_values() -> dict[str, Any]:
    return load_values("values-production.yaml")


VARIANTS = {
    "default": merged(OFFLINE, {"jwt": {"keys": JWT_KEYS}}),
    "production": merged(production_values(), OFFLINE),
}


@dataclass
class Rendered:
    variant: str
    values: dict[str, Any]  # the overrides, over values.yaml
    objects: list[dict[str, Any]]
    notes: str

    def of(self, kind: str) -> dict[str, dict[str, Any]]:
        return {o["metadata"]["name"]: o for o in self.objects if o["kind"] == kind}

    def effective(self) -> dict[str, Any]:
        return merged(chart_values(), self.values)

    def services(self) -> dict[str, dict[str, Any]]:
        """Each service entry over ``defaults``, as the chart merges them."""
        values = self.effective()
        return {s["name"]: merged(values["defaults"], s) for s in values["services"]}


def render(values: dict[str, Any], variant: str = "custom") -> Rendered:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
        else:
            objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return Rendered(variant, values, objects, notes)


@cache
def _variant(name: str) -> Rendered:
    return render(VARIANTS[name], name)


@pytest.fixture(params=sorted(VARIANTS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return _variant(request.param)


def name(service: str) -> str:
    return f"{RELEASE}-{service}"


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    only: dict[str, Any]
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """NAME -> value, or NAME -> its valueFrom."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


def validate(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Validate every built-in object; returns the (apiVersion, kind) of those skipped."""
    skipped = []
    for obj in objects:
        kind = (obj["apiVersion"], obj["kind"])
        if kind in CUSTOM_RESOURCES:
            skipped.append(kind)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
    return skipped


# --- lint and schema -------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lint_finds_no_errors(variant: str) -> None:
    report = helm.lint(CHART, VARIANTS[variant], kube_version=f"v{KUBERNETES}.0")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 3] == []
    # The only warning: the NATS chart is not fetched here (helm dependency update).
    warnings = {m["error"] for m in report["messages"] if m["severity"] == 2}
    assert warnings <= {MISSING_DEPENDENCY}


def test_the_values_files_pass_the_schema() -> None:
    with helm.Chart.load(CHART) as chart:
        for values in ({}, production_values(), *VARIANTS.values()):
            chart.validate_schema(values)


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"services": [{"name": "feed", "module": "learnfeed.feed", "replicas": -1}]}, "replicas"),
        ({"services": [{"name": "feed"}]}, "module"),
        ({"services": [{"name": "feed", "module": "learnfeed.feed", "kind": "tcp"}]}, "kind"),
        ({"services": [{"name": "web", "module": "learnfeed.gateway", "kind": "http"}]}, "port"),
        ({"services": [{"name": "Feed!", "module": "learnfeed.feed"}]}, "name"),
        ({"services": [{"name": "feed", "module": "learnfeed.feed", "replica": 2}]}, "replica"),
        ({"services": []}, "services"),
        ({"defaults": {"autoscaling": {"minReplicas": 0}}}, "minReplicas"),
        ({"topologySpread": {"zone": {"whenUnsatisfiable": "Sometimes"}}}, "whenUnsatisfiable"),
        ({"natsUrl": "localhost:4222"}, "natsUrl"),
        ({"logLevel": "loud"}, "logLevel"),
    ],
)
def test_the_schema_rejects_bad_values(overrides: dict[str, Any], complaint: str) -> None:
    values = merged(VARIANTS["default"], overrides)
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError, match=complaint):
            chart.validate_schema(values)
        with pytest.raises(helm.HelmValuesError):  # render refuses them too
            chart.render(values, name=RELEASE, namespace=NAMESPACE)


# --- every object is valid Kubernetes --------------------------------------------------


def test_every_object_is_valid_for_kubernetes(rendered: Rendered) -> None:
    skipped = validate(rendered.objects)
    assert len(rendered.objects) > len(skipped)
    assert set(skipped) <= CUSTOM_RESOURCES


def test_the_optional_parts_are_valid_too() -> None:
    """Everything switched on at once: KEDA, ServiceMonitors on both ports, rates, a zone
    label, a database URL, extra env from a Secret, a seventh service."""
    values = merged(
        VARIANTS["production"],
        {
            "zoneLabel": "topology.kubernetes.io/zone",
            "database": {"existingSecret": "", "url": "postgresql://u:p@db/learnfeed"},
            "env": {"CELLWORK_ACCESS_LOG": "true"},
            "metrics": {"serviceMonitor": {"httpEndpoint": True}},
        },
    )
    values["services"] = copy.deepcopy(values["services"])
    for service in values["services"]:
        if service["name"] == "recommender":
            service["keda"]["enabled"] = True
            service["keda"]["natsServerMonitoringEndpoint"] = "nats:8222"
        service["env"] = {"EXTRA": {"secretKeyRef": {"name": "extra", "key": "value"}}}
    values["services"].append({"name": "echo", "module": "cellwork.testing.echo"})
    result = render(values)
    skipped = validate(result.objects)
    assert sorted(skipped) == sorted(
        [("keda.sh/v1alpha1", "ScaledObject")]
        + [("monitoring.coreos.com/v1", "ServiceMonitor")] * 7
    )


# --- Deployments -----------------------------------------------------------------------


def test_each_service_runs_its_module_from_the_one_image(rendered: Rendered) -> None:
    deployments = rendered.of("Deployment")
    assert set(deployments) == {name(s) for s in KINDS}
    for service in KINDS:
        c = container(deployments[name(service)])
        assert c["args"] == ["serve", f"learnfeed.{service}"]
        assert "command" not in c  # the image's ENTRYPOINT is cellwork
        assert c["image"].startswith("ghcr.io/cellwork/cellwork:")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["grpc"] == GRPC_PORT and ports["metrics"] == METRICS_PORT
        if KINDS[service] == "http":
            assert ports["http"] == HTTP_PORTS[service]


def test_the_environment_says_who_and_where_each_instance_is(rendered: Rendered) -> None:
    values = rendered.effective()
    for service, deployment in rendered.of("Deployment").items():
        env = env_of(deployment)
        short = service.removeprefix(f"{RELEASE}-")
        assert env["CELLWORK_SERVICE"] == short
        assert env["CELLWORK_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env["CELLWORK_ADVERTISE_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert env["CELLWORK_HOST"] == "0.0.0.0"
        assert env["CELLWORK_GRPC_PORT"] == str(GRPC_PORT)
        assert env["CELLWORK_METRICS_PORT"] == str(METRICS_PORT)
        assert env["CELLWORK_NATS_URL"] == "nats://nats:4222"
        assert env["CELLWORK_STATE_DIR"] == "/var/lib/cellwork"
        assert env["CELLWORK_ZONE"] == "k8s"
        assert env["CELLWORK_DRAIN_TIMEOUT"] == str(values["drainTimeoutSeconds"])
        assert "CELLWORK_DEMO" not in env
        assert set(env["CELLWORK_JWT_KEYS"]) == {"secretKeyRef"}
        if short in HTTP_PORTS:
            port_env = {"gateway": "CELLWORK_GATEWAY_PORT", "push": "CELLWORK_PUSH_PORT"}[short]
            assert env[port_env] == str(HTTP_PORTS[short])
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > float(env["CELLWORK_DRAIN_TIMEOUT"])
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/var/lib/cellwork"]]
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert "lifecycle" not in container(deployment)  # SIGTERM drains: no preStop


def test_secrets_come_from_secret_objects() -> None:
    default = _variant("default")
    (secret,) = default.of("Secret").values()
    assert secret["stringData"] == {"jwt-keys": JWT_KEYS}
    ref = env_of(default.of("Deployment")[name("feed")])["CELLWORK_JWT_KEYS"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "jwt-keys"}

    production = _variant("production")
    assert production.of("Secret") == {}  # existing Secrets only
    env = env_of(production.of("Deployment")[name("feed")])
    assert env["CELLWORK_JWT_KEYS"]["secretKeyRef"] == {"name": "learnfeed-jwt", "key": "jwt-keys"}
    assert env["CELLWORK_DATABASE_URL"]["secretKeyRef"] == {
        "name": "learnfeed-database",
        "key": "database-url",
    }


def test_probes_use_grpc_health_or_the_http_endpoints(rendered: Rendered) -> None:
    for service, kind in KINDS.items():
        c = container(rendered.of("Deployment")[name(service)])
        probes = {p: c[f"{p}Probe"] for p in ("startup", "readiness", "liveness")}
        if kind == "grpc":
            for probe in probes.values():
                assert probe["grpc"] == {"port": GRPC_PORT}
        else:
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            paths = {p: probe["httpGet"]["path"] for p, probe in probes.items()}
            assert paths == {"startup": "/healthz", "readiness": "/readyz", "liveness": "/healthz"}
            for probe in probes.values():
                assert ports[probe["httpGet"]["port"]] == HTTP_PORTS[service]
                assert "grpc" not in probe


def test_every_container_has_requests_limits_and_a_locked_down_context(
    rendered: Rendered,
) -> None:
    for deployment in rendered.of("Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["fsGroup"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"] + pod.get("initContainers", []):
            for part in ("requests", "limits"):
                assert set(c["resources"][part]) >= {"cpu", "memory"}, (c["name"], part)
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]


def test_pods_spread_over_zones_and_nodes(rendered: Rendered) -> None:
    zone_rule = rendered.effective()["topologySpread"]["zone"]["whenUnsatisfiable"]
    for deployment in rendered.of("Deployment").values():
        pod = deployment["spec"]["template"]
        spread = {c["topologyKey"]: c for c in pod["spec"]["topologySpreadConstraints"]}
        assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == zone_rule
        assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "ScheduleAnyway"
        for constraint in spread.values():
            assert constraint["maxSkew"] == 1
            selector = constraint["labelSelector"]["matchLabels"]
            assert selector == deployment["spec"]["selector"]["matchLabels"]
            assert selector.items() <= pod["metadata"]["labels"].items()
    assert _variant("production").effective()["topologySpread"]["zone"] == {
        "whenUnsatisfiable": "DoNotSchedule"
    }


# --- disruption budgets and autoscaling ------------------------------------------------


def _floor(service: dict[str, Any]) -> int:
    """The fewest replicas a service runs: KEDA's or the HPA's minimum, else replicas."""
    if service.get("keda", {}).get("enabled"):
        return int(service["keda"]["minReplicaCount"])
    autoscaling = service.get("autoscaling", {})
    if autoscaling.get("enabled"):
        return int(autoscaling.get("minReplicas", service["replicas"]))
    return int(service["replicas"])


def test_a_disruption_budget_exactly_where_two_or_more_replicas_run(rendered: Rendered) -> None:
    expected = {name(s) for s, spec in rendered.services().items() if _floor(spec) >= 2}
    # identity runs one replica by default; everything runs three in production.
    assert (
        expected
        == {
            "default": {name(s) for s in KINDS if s != "identity"},
            "production": {name(s) for s in KINDS},
        }[rendered.variant]
    )
    budgets = rendered.of("PodDisruptionBudget")
    assert set(budgets) == expected
    deployments = rendered.of("Deployment")
    for budget_name, budget in budgets.items():
        assert budget["apiVersion"] == "policy/v1"
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"] == deployments[budget_name]["spec"]["selector"]


def test_without_autoscaling_the_budget_follows_replicas() -> None:
    values = merged(
        VARIANTS["default"],
        {
            "services": [
                {"name": "one", "module": "learnfeed.feed", "replicas": 1},
                {"name": "two", "module": "learnfeed.feed", "replicas": 2},
            ],
            "defaults": {"autoscaling": {"enabled": False}},
        },
    )
    result = render(values)
    assert set(result.of("PodDisruptionBudget")) == {name("two")}
    assert result.of("HorizontalPodAutoscaler") == {}
    replicas = {n: d["spec"]["replicas"] for n, d in result.of("Deployment").items()}
    assert replicas == {name("one"): 1, name("two"): 2}
    validate(result.objects)


def test_autoscalers_scale_on_cpu_and_optionally_on_request_rate(rendered: Rendered) -> None:
    services = rendered.services()
    autoscalers = rendered.of("HorizontalPodAutoscaler")
    assert set(autoscalers) == {name(s) for s in KINDS}
    rates = 0
    for service, spec in services.items():
        hpa = autoscalers[name(service)]
        autoscaling = spec["autoscaling"]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name(service),
        }
        assert hpa["spec"]["minReplicas"] == autoscaling.get("minReplicas", spec["replicas"])
        assert hpa["spec"]["maxReplicas"] == autoscaling["maxReplicas"]
        # The HPA owns the replica count.
        assert "replicas" not in rendered.of("Deployment")[name(service)]["spec"]
        metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
        cpu = metrics["Resource"]["resource"]
        assert cpu["name"] == "cpu"
        assert cpu["target"] == {
            "type": "Utilization",
            "averageUtilization": autoscaling["targetCPUUtilizationPercentage"],
        }
        window = hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
        assert window == autoscaling["scaleDown"]["stabilizationWindowSeconds"]
        if autoscaling.get("requestsPerSecond"):
            rates += 1
            pods = metrics["Pods"]["pods"]
            metric = {
                "http": "cellwork_http_requests_per_second",
                "grpc": "cellwork_rpc_server_requests_per_second",
            }[KINDS[service]]
            assert pods["metric"]["name"] == metric
            assert pods["target"] == {
                "type": "AverageValue",
                "averageValue": str(autoscaling["requestsPerSecond"]),
            }
        else:
            assert "Pods" not in metrics
    # catalog, feed and the gateway scale on request rate in production.
    assert rates == {"default": 0, "production": 3}[rendered.variant]


def test_keda_replaces_the_recommenders_autoscaler_only_when_enabled(rendered: Rendered) -> None:
    assert rendered.of("ScaledObject") == {}

    values = copy.deepcopy(rendered.values)
    values.setdefault("services", copy.deepcopy(chart_values()["services"]))
    for service in values["services"]:
        if service["name"] == "recommender":
            service["keda"]["enabled"] = True
    with pytest.raises(helm.HelmRenderError, match="natsServerMonitoringEndpoint"):
        render(values)  # an external NATS: its monitoring endpoint must be named

    # With the NATS subchart, its headless Service's monitoring port.
    result = render(merged(values, {"nats": {"enabled": True}, "natsUrl": ""}))
    (scaled,) = result.of("ScaledObject").values()
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["name"] == name("recommender")
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name("recommender"),
    }
    spec = result.services()["recommender"]["keda"]
    assert scaled["spec"]["minReplicaCount"] == spec["minReplicaCount"]
    assert scaled["spec"]["maxReplicaCount"] == spec["maxReplicaCount"]
    triggers = {t["type"]: t for t in scaled["spec"]["triggers"]}
    headless = f"{RELEASE}-nats-headless.{NAMESPACE}.svc.cluster.local"
    assert triggers["nats-jetstream"]["metadata"] == {
        "natsServerMonitoringEndpoint": f"{headless}:8222",
        "account": "$G",
        "stream": "FEED",
        "consumer": "recommender",
        "lagThreshold": "100",
        "activationLagThreshold": "0",
        "useHttps": "false",
    }
    assert triggers["cpu"] == {
        "type": "cpu",
        "metricType": "Utilization",
        "metadata": {"value": str(spec["cpuUtilization"])},
    }
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] > 0
    assert name("recommender") not in result.of("HorizontalPodAutoscaler")  # KEDA owns it
    assert "replicas" not in result.of("Deployment")[name("recommender")]["spec"]
    assert name("recommender") in result.of("PodDisruptionBudget")
    env = env_of(result.of("Deployment")[name("recommender")])
    assert env["CELLWORK_NATS_URL"] == f"nats://{RELEASE}-nats.{NAMESPACE}.svc:4222"
    assert ("keda.sh/v1alpha1", "ScaledObject") in validate(result.objects)


# --- Services, Ingress, ServiceMonitors ------------------------------------------------


def test_grpc_services_are_headless_http_services_have_a_cluster_ip(rendered: Rendered) -> None:
    services = rendered.of("Service")
    assert set(services) == {name(s) for s in KINDS}
    for service, kind in KINDS.items():
        svc = services[name(service)]
        ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
        assert ports["metrics"] == METRICS_PORT
        selector = rendered.of("Deployment")[name(service)]["spec"]["selector"]["matchLabels"]
        assert svc["spec"]["selector"] == selector
        if kind == "grpc":
            assert svc["spec"]["clusterIP"] == "None"
        else:
            assert svc["spec"]["type"] == "ClusterIP"
            assert ports["http"] == HTTP_PORTS[service]


def test_gateway_and_push_have_an_ingress(rendered: Rendered) -> None:
    ingresses = rendered.of("Ingress")
    assert set(ingresses) == {name("gateway"), name("push")}
    for service, ingress in (
        ("gateway", ingresses[name("gateway")]),
        ("push", ingresses[name("push")]),
    ):
        assert ingress["apiVersion"] == "networking.k8s.io/v1"
        assert ingress["spec"]["ingressClassName"] == "nginx"
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"] == {
                    "name": name(service),
                    "port": {"name": "http"},
                }
    push = ingresses[name("push")]["metadata"]["annotations"]
    assert push["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert push["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    gateway = ingresses[name("gateway")]["metadata"]["annotations"]
    assert gateway["nginx.ingress.kubernetes.io/proxy-body-size"] == "64k"
    paths = {
        p["path"]
        for i in ingresses.values()
        for r in i["spec"]["rules"]
        for p in r["http"]["paths"]
    }
    assert paths == {"/", "/v1/stream"}


def test_service_monitors_only_when_enabled(rendered: Rendered) -> None:
    monitors = rendered.of("ServiceMonitor")
    if not rendered.effective()["metrics"]["serviceMonitor"]["enabled"]:
        assert monitors == {}
        return
    assert set(monitors) == {name(s) for s in KINDS}
    services = rendered.of("Service")
    for monitor_name, monitor in monitors.items():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert (
            monitor["spec"]["selector"]["matchLabels"] == services[monitor_name]["spec"]["selector"]
        )
        endpoints = monitor["spec"]["endpoints"]
        assert [e["port"] for e in endpoints] == ["metrics"]
        assert endpoints[0]["path"] == "/metrics"
        port_names = {p["name"] for p in services[monitor_name]["spec"]["ports"]}
        assert {e["port"] for e in endpoints} <= port_names


def test_service_monitors_can_scrape_the_http_port_of_gateway_and_push() -> None:
    result = render(
        merged(VARIANTS["production"], {"metrics": {"serviceMonitor": {"httpEndpoint": True}}})
    )
    for service, kind in KINDS.items():
        ports = [e["port"] for e in result.of("ServiceMonitor")[name(service)]["spec"]["endpoints"]]
        assert ports == (["metrics", "http"] if kind == "http" else ["metrics"])


# --- what the chart refuses, the demo, the notes, an extra service ---------------------


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"jwt": {"keys": ""}}, "jwt.existingSecret"),
        ({"jwt": {"keys": "k1:learnfeed-dev-key-change-me-please"}}, "development key"),
        ({"jwt": {"keys": "k1:short"}}, "32 or more characters"),
        ({"nats": {"enabled": True}}, "nats.enabled=false"),
        ({"natsUrl": ""}, "no NATS"),
        ({"drainTimeoutSeconds": 30, "terminationGracePeriodSeconds": 30}, "must exceed"),
        ({"services": [{"name": "a", "module": "x.a"}, {"name": "a", "module": "x.b"}]}, "twice"),
    ],
)
def test_the_chart_refuses_what_would_crash_loop(overrides: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=complaint):
        render(merged(VARIANTS["default"], overrides))


def test_a_demo_needs_no_keys() -> None:
    result = render(merged(OFFLINE, {"demo": True}))
    assert result.of("Secret") == {}
    env = env_of(result.of("Deployment")[name("catalog")])
    assert env["CELLWORK_DEMO"] == "1"
    assert "CELLWORK_JWT_KEYS" not in env
    assert "demo=true" in result.notes


def test_the_notes_tell_how_to_reach_the_gateway() -> None:
    default = _variant("default").notes
    assert f"port-forward svc/{name('gateway')} 8080:8080" in default
    assert "http://learnfeed.local/" in default
    assert "ws://learnfeed.local/v1/stream" in default
    production = _variant("production").notes
    assert "https://api.learnfeed.example.com/" in production
    assert "wss://api.learnfeed.example.com/v1/stream" in production


def test_a_service_is_an_image_plus_values() -> None:
    values = merged(VARIANTS["default"])
    values["services"] = [
        *chart_values()["services"],
        {
            "name": "echo",
            "module": "cellwork.testing.echo",
            "image": {"repository": "registry.example/echo", "tag": "1.2"},
            "replicas": 3,
            "autoscaling": {"enabled": False},
            "env": {"CELLWORK_ECHO_DELAY_MS": "5"},
        },
    ]
    result = render(values)
    echo = result.of("Deployment")[name("echo")]
    assert echo["spec"]["replicas"] == 3
    c = container(echo)
    assert c["args"] == ["serve", "cellwork.testing.echo"]
    assert c["image"] == "registry.example/echo:1.2"
    assert env_of(echo)["CELLWORK_ECHO_DELAY_MS"] == "5"
    assert c["readinessProbe"]["grpc"] == {"port": GRPC_PORT}
    assert c["resources"] == chart_values()["defaults"]["resources"]
    assert name("echo") in result.of("PodDisruptionBudget")
    assert name("echo") not in result.of("HorizontalPodAutoscaler")
    validate(result.objects)
