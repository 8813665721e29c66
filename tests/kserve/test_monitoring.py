"""The opt-in monitoring component: renders onto each overlay, validates strictly, one copy of each file."""

from __future__ import annotations

import copy
import json
import tempfile
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from harness.processes import REPO
from tests.kserve.rendering import OVERLAYS, find, render, write_overlay
from tests.kserve.test_manifests import strict
from tests.kserve.test_manifests import validate as validate_base

SCHEMAS = Path(__file__).parent / "schemas"
MONITORING_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule_v1.json",
}
OBSERVABILITY = REPO / "observability"
# The annotations KServe's pod webhook reads (pkg/constants/constants.go: EnableMetricAggregation,
# SetPrometheusAnnotation, KserveContainerPrometheusPortKey, KServeContainerPrometheusPathKey).
SCRAPING_ANNOTATIONS = {
    "serving.kserve.io/enable-metric-aggregation": "true",
    "serving.kserve.io/enable-prometheus-scraping": "true",
    "prometheus.kserve.io/port": "8080",
    "prometheus.kserve.io/path": "/metrics",
}


@cache
def rendered_with_monitoring(overlay: str) -> tuple[dict, ...]:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_overlay(Path(tmp) / f"{overlay}-monitoring", overlay, ["monitoring"], f"sentiment-{overlay}")
        return tuple(render(path))


@cache
def monitoring_validator(filename: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(strict(json.loads((SCHEMAS / filename).read_text())))


def validate(doc: dict) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in MONITORING_SCHEMAS:
        monitoring_validator(MONITORING_SCHEMAS[key]).validate(doc)
    elif doc["kind"] == "ConfigMap":
        import kubernetes_validate

        kubernetes_validate.validate(doc, "1.30", strict=True)
    else:
        validate_base(doc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_document_validates_strictly(overlay):
    docs = rendered_with_monitoring(overlay)
    assert {"PodMonitor", "PrometheusRule", "ConfigMap", "InferenceService"} <= {d["kind"] for d in docs}
    for doc in docs:
        validate(doc)
    namespaced = [d for d in docs if d["kind"] in ("PodMonitor", "PrometheusRule", "ConfigMap")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {f"sentiment-{overlay}"}


@pytest.mark.parametrize(("kind", "mutate"), [
    ("PodMonitor", lambda d: d["spec"].update(podMetricEndpoints=d["spec"].pop("podMetricsEndpoints"))),
    ("PodMonitor", lambda d: d["spec"]["podMetricsEndpoints"][0].update(interval="30 seconds")),
    ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(fro="5m")),
])
def test_a_misspelled_field_fails_validation(kind, mutate):
    doc = copy.deepcopy(next(d for d in rendered_with_monitoring("dev") if d["kind"] == kind))
    validate(doc)
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def test_dashboard_and_rules_are_the_files_in_observability():
    docs = rendered_with_monitoring("prod")
    dashboard = find(docs, "ConfigMap", "sentiment-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    [(name, text)] = dashboard["data"].items()
    assert name.endswith(".json")
    assert json.loads(text) == json.loads((OBSERVABILITY / "sentiment-dashboard.json").read_text())
    rules = find(docs, "PrometheusRule", "sentiment-alerts")
    assert rules["spec"] == yaml.safe_load((OBSERVABILITY / "sentiment-rules.yaml").read_text())["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_monitor_selects_both_components_of_the_inference_service(overlay):
    docs = rendered_with_monitoring(overlay)
    monitor = find(docs, "PodMonitor", "sentiment")
    isvc = find(docs, "InferenceService", "sentiment")
    selector = monitor["spec"]["selector"]
    # The labels KServe puts on each component's pods.
    for component in ("predictor", "transformer"):
        pod_labels = {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"], "component": component}
        assert selector["matchLabels"].items() <= pod_labels.items()
        assert all(pod_labels[e["key"]] in e["values"] for e in selector["matchExpressions"])
    # Knative names the serving container's port user-port and the queue-proxy's metrics port http-usermetric.
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["user-port", "http-usermetric"]
    assert "namespaceSelector" not in monitor["spec"]  # the InferenceService's own namespace


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_service_carries_kserve_scraping_annotations(overlay):
    isvc = find(rendered_with_monitoring(overlay), "InferenceService", "sentiment")
    assert SCRAPING_ANNOTATIONS.items() <= isvc["metadata"]["annotations"].items()
    http_ports = {c["ports"][0]["containerPort"] for name in ("predictor", "transformer")
                  for c in isvc["spec"][name]["containers"]}
    assert http_ports == {int(SCRAPING_ANNOTATIONS["prometheus.kserve.io/port"])}
