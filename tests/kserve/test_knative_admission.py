"""Knative admission rules: every pod spec KServe hands to Knative passes the webhook's checks
with the default feature flags (sources and the rules themselves: knative_admission.py)."""

from __future__ import annotations

import copy

import pytest

from tests.kserve.knative_admission import annotation_violations, go_duration_s, knative_pod_specs, violations
from tests.kserve.rendering import OVERLAYS, rendered_setup

SETUPS = {setup: (lambda s=setup: rendered_setup(s))
          for setup in [*OVERLAYS, "prod+grpc", "dev+runtime", "prod+runtime", "prod+runtime+grpc+jwt",
                        "prod+hf-download"]}


def pod_specs(setup: str) -> dict[str, dict]:
    return dict(knative_pod_specs(SETUPS[setup]()))


@pytest.mark.parametrize("setup", SETUPS)
def test_every_pod_spec_kserve_hands_to_knative_is_admitted(setup):
    specs = pod_specs(setup)
    for name, spec in specs.items():
        assert violations(spec) == [], name
    expected = {"sentiment/predictor", "sentiment/transformer"}
    if "+grpc" in setup:
        expected.add("sentiment-grpc/predictor")
    assert set(specs) == expected


@pytest.mark.parametrize("setup", SETUPS)
def test_every_components_autoscaling_annotations_are_admitted(setup):
    for doc in (d for d in SETUPS[setup]() if d["kind"] == "InferenceService"):
        for component in ("predictor", "transformer"):
            if component in doc["spec"]:
                annotations = doc["spec"][component]["annotations"]
                assert annotation_violations(annotations) == [], (doc["metadata"]["name"], component)
                # The idle knobs the README explains are set on every component, not left to the cluster.
                for knob in ("scale-to-zero-pod-retention-period", "scale-down-delay", "initial-scale",
                             "target-burst-capacity"):
                    assert f"autoscaling.knative.dev/{knob}" in annotations, (doc["metadata"]["name"], component)


@pytest.mark.parametrize(("knob", "value", "why"), [
    ("initial-scale", "0", "not allowed by the cluster"),
    ("initial-scale", "one", "integer"),
    ("scale-down-delay", "2h", "from 0s to 1h"),
    ("scale-down-delay", "1.5s", "second precision"),
    ("scale-to-zero-pod-retention-period", "5 minutes", "from 0s to 1h"),
    ("target-burst-capacity", "-2", "-1 or at least 0"),
])
def test_autoscaling_annotations_knative_refuses_are_caught(knob, value, why):
    [error] = annotation_violations({f"autoscaling.knative.dev/{knob}": value})
    assert why in error


def test_go_durations():
    assert [go_duration_s(t) for t in ("5m", "1m30s", "900s", "1h", "0", "250ms")] == [300, 90, 900, 3600, 0, 0.25]
    assert go_duration_s("5") is None and go_duration_s("m") is None


def dev_predictor() -> dict:
    return copy.deepcopy(pod_specs("dev")["sentiment/predictor"])


def dev_transformer() -> dict:
    return copy.deepcopy(pod_specs("dev")["sentiment/transformer"])


def _pod_security_context(spec):
    spec["securityContext"] = {"runAsNonRoot": True, "fsGroup": 1000}


def _field_ref_env(spec):
    spec["containers"][0]["env"].append({"name": "CACHE_NAMESPACE",
                                         "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})


def _second_port(spec):
    spec["containers"][0]["ports"].append({"name": "h2c", "containerPort": 8081, "protocol": "TCP"})


def _grpc_port_name(spec):
    spec["containers"][0]["ports"][0]["name"] = "grpc"


def _reserved_port(spec):
    spec["containers"][0]["ports"][0]["containerPort"] = 8012


def _reserved_env(spec):
    spec["containers"][0]["env"].append({"name": "PORT", "value": "8080"})


def _lifecycle(spec):
    spec["containers"][0]["lifecycle"] = {"preStop": {"exec": {"command": ["sh", "-c", "sleep 5"]}}}


def _add_capability(spec):
    spec["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]


def _init_container(spec):
    spec["initContainers"] = [{"name": "warm", "image": "busybox"}]


def _automount_token(spec):
    spec["automountServiceAccountToken"] = True


def _unmounted_volume(spec):
    spec["volumes"].append({"name": "spare", "emptyDir": {}})


def _probe_on_named_port(spec):
    spec["containers"][0]["readinessProbe"]["httpGet"]["port"] = "admin"


@pytest.mark.parametrize(("mutate", "says"), [
    (_pod_security_context, "kubernetes.podspec-securitycontext"),
    (_field_ref_env, "kubernetes.podspec-fieldref"),
    (_second_port, "more than one container port"),
    (_grpc_port_name, "'grpc' is not allowed"),
    (_reserved_port, "8012 is a reserved port"),
    (_reserved_env, "'PORT' is a reserved environment variable"),
    (_lifecycle, "lifecycle: not a field Knative accepts"),
    (_add_capability, "kubernetes.containerspec-addcapabilities"),
    (_init_container, "kubernetes.podspec-init-containers"),
    (_automount_token, "only false"),
    (_unmounted_volume, "not mounted"),
    (_probe_on_named_port, "must match the container port name"),
])
def test_the_checker_refuses_what_knative_refuses(mutate, says):
    spec = dev_transformer() if mutate is _field_ref_env else dev_predictor()
    assert violations(spec) == []
    mutate(spec)
    found = violations(spec)
    assert any(says in v for v in found), found
