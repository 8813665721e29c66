"""The opt-in external-redis component: a managed Redis (or a cluster of one's own) instead of the in-cluster one.
It renders onto each overlay, validates strictly, passes Knative's admission, and wires the transformer's
settings by the names the transformer reads."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from tests.kserve.knative_admission import knative_pod_specs, violations
from tests.kserve.rendering import OVERLAYS, find, rendered, rendered_setup
from tests.kserve.test_manifests import container, serving_pod_labels, validate
from transformer.settings import TransformerSettings

IN_CLUSTER_REDIS = {("Deployment", "sentiment-redis"), ("Service", "sentiment-redis"),
                    ("NetworkPolicy", "sentiment-redis-from-transformer"), ("AuthorizationPolicy", "sentiment-redis")}
SETTINGS_ENV = {f.metadata["env"] for f in dataclasses.fields(TransformerSettings) if f.metadata.get("env")}


def external(overlay: str) -> tuple[dict, ...]:
    return rendered_setup(f"{overlay}+external-redis")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_in_cluster_redis_is_gone_and_the_rest_stays(overlay):
    docs = external(overlay)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert not names & IN_CLUSTER_REDIS
    before = {(d["kind"], d["metadata"]["name"]) for d in rendered(overlay)}
    assert names == (before - IN_CLUSTER_REDIS) | {("NetworkPolicy", "sentiment-transformer-egress")}
    for doc in docs:
        validate(doc)
        assert doc["metadata"].get("namespace", f"sentiment-{overlay}") == f"sentiment-{overlay}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_knative_admits_the_transformer_with_its_ca_volume(overlay):
    specs = dict(knative_pod_specs(external(overlay)))
    assert set(specs) == {"sentiment/predictor", "sentiment/transformer"}
    for name, spec in specs.items():
        assert violations(spec) == [], name
    # The checker would refuse the CA volume mounted writable (Knative: read-only for non-emptyDir volumes).
    spec = copy.deepcopy(specs["sentiment/transformer"])
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "redis-ca")
    mount["readOnly"] = False
    assert any("must be readOnly" in v for v in violations(spec))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_transformer_reads_url_flag_secrets_and_ca_by_the_names_it_knows(overlay):
    svc = find(external(overlay), "InferenceService", "sentiment")
    c = container(svc["spec"]["transformer"])
    env = {e["name"]: e for e in c["env"]}
    assert set(env) - {"CACHE_NAMESPACE"} <= SETTINGS_ENV  # every variable is one the transformer reads
    secret = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "valueFrom" in e}
    assert {name: ref["key"] for name, ref in secret.items()} == {
        "REDIS_URL": "url", "REDIS_PASSWORD": "password", "REDIS_CLUSTER": "cluster", "REDIS_USERNAME": "username"}
    assert {ref["name"] for ref in secret.values()} == {"sentiment-redis"}
    assert secret["REDIS_CLUSTER"]["optional"] and secret["REDIS_USERNAME"]["optional"]
    # The CA: a file of the ConfigMap, mounted read-only where REDIS_CA_CERT points.
    mount = next(m for m in c["volumeMounts"] if m["name"] == "redis-ca")
    volume = next(v for v in svc["spec"]["transformer"]["volumes"] if v["name"] == "redis-ca")
    assert mount["readOnly"] and volume == {"name": "redis-ca", "configMap": {"name": "sentiment-redis-ca"}}
    assert env["REDIS_CA_CERT"]["value"] == f"{mount['mountPath']}/ca.crt"
    # Nothing secret on the command line.
    assert not [a for a in c["args"] if "redis" in a.lower()]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_egress_reaches_the_managed_services_ports_from_the_transformer_only(overlay):
    docs = external(overlay)
    svc = find(docs, "InferenceService", "sentiment")
    policy = find(docs, "NetworkPolicy", "sentiment-transformer-egress")["spec"]
    selector = policy["podSelector"]["matchLabels"]
    assert selector.items() <= serving_pod_labels(svc, "transformer").items()
    assert not selector.items() <= serving_pod_labels(svc, "predictor").items()
    assert policy["policyTypes"] == ["Egress"]
    in_cluster, dns, redis = policy["egress"]
    assert in_cluster == {"to": [{"namespaceSelector": {}}]}
    assert {p["port"] for p in dns["ports"]} == {53}

    def opens(port: int) -> bool:
        return any(p["port"] <= port <= p.get("endPort", p["port"]) for p in redis["ports"])

    # ElastiCache/Memorystore/self-hosted, Azure Cache for Redis (TLS, and a clustered cache's shard ports),
    # Azure Managed Redis (and its OSS-cluster node ports).
    assert all(opens(port) for port in (6379, 6380, 15000, 15009, 10000, 8501))
    assert not opens(443) and not opens(22)
