"""components/jwt: the rendered RequestAuthentication and AuthorizationPolicies, evaluated against
every caller the serving pods have (tests/kserve/istio_authz.py encodes Istio's rules, with sources).

Callers and their identities under mTLS: public clients come through the ingress gateway and
knative-local-gateway (the gateway namespace's identity) and, when Knative puts it in the path,
Knative's activator (knative-serving/sa/activator), which forwards the client's headers; the
activator probes each pod at /healthz (knative/serving pkg/activator/net/revision_backends.go,
nethttp.HealthCheckPath), as net-istio's ingress readiness probes do (knative.dev/networking
pkg/status/status.go); the autoscaler (knative-serving/sa/controller, config/core/deployments/
autoscaler.yaml) scrapes the queue-proxy at :9090/metrics (pkg/autoscaler/metrics/stats_scraper.go);
requests reach the queue-proxy on 8012 (http1) or 8013 (h2c) (pkg/networking/constants.go); the
transformer calls the predictor with no token, directly or through the activator.
"""

from __future__ import annotations

import copy
import re
import subprocess

import pytest
import yaml

from harness.readme import readme_section
from tests.kserve.istio_authz import Request, Token, decide, kubelet_probe, principal, value_matches
from tests.kserve.rendering import COMPONENT_KNOBS, KSERVE, find, kubectl, rendered_setup, write_overlay
from tests.kserve.test_manifests import serving_pod_labels, validate

NAMESPACE = "sentiment-prod"
KNOB = dict(literal.split("=", 1) for literal in COMPONENT_KNOBS["jwt"]["literals"])
GOOD = Token(KNOB["issuer"], KNOB["audience"])
QUEUE_HTTP1, QUEUE_H2C, AUTOSCALER_SCRAPE = 8012, 8013, 9090
GATEWAY = principal("istio-system", "istio-ingressgateway")
ACTIVATOR = principal("knative-serving", "activator")
AUTOSCALER = principal("knative-serving", "controller")
TRANSFORMER = principal(NAMESPACE, "sentiment-transformer")
STRANGER = principal("default", "default")


def pod(docs, isvc: str, component: str) -> tuple[dict, dict]:
    """(labels KServe puts on the component's pods, its container)."""
    svc = find(docs, "InferenceService", isvc)
    [container] = svc["spec"][component]["containers"]
    return serving_pod_labels(svc, component), container


def outcome(docs, isvc: str, component: str, request: Request):
    labels, _ = pod(docs, isvc, component)
    return decide(docs, svc_namespace(docs, isvc), labels, request)


def svc_namespace(docs, isvc: str) -> str:
    return find(docs, "InferenceService", isvc)["metadata"]["namespace"]


def public(path: str, token: Token | None, via: str = GATEWAY, port: int = QUEUE_HTTP1, method: str = "POST"):
    return Request(peer=via, port=port, path=path, method=method, token=token)


PUBLIC_PATHS = ["/v1/models/sentiment:predict", "/bulk-predict", "/v2/models/sentiment/infer",
                "/v2/models/sentiment"]


@pytest.mark.parametrize("setup", ["prod+jwt", "prod+jwt+grpc", "dev+jwt"])
def test_jwt_setups_render_and_validate_strictly(setup):
    docs = rendered_setup(setup)
    for doc in docs:
        validate(doc)
    text = yaml.safe_dump_all(docs)
    assert "set-by-the-jwt-knob" not in text  # every placeholder came from the knob
    assert not [d for d in docs if d["kind"] == "ConfigMap"]  # the knob itself is never applied
    [auth] = [d for d in docs if d["kind"] == "RequestAuthentication"]
    [rule] = auth["spec"]["jwtRules"]
    assert (rule["issuer"], rule["jwksUri"], rule["audiences"]) == (KNOB["issuer"], KNOB["jwksUri"],
                                                                   [KNOB["audience"]])
    assert rule["forwardOriginalToken"] is False  # the transformer never sees the token


def test_a_mistyped_request_authentication_field_fails_validation():
    doc = copy.deepcopy(find(rendered_setup("prod+jwt"), "RequestAuthentication", "sentiment-jwt"))
    doc["spec"]["jwtRules"][0]["audience"] = doc["spec"]["jwtRules"][0].pop("audiences")
    with pytest.raises(Exception, match="audience"):
        validate(doc)


def test_the_component_refuses_to_render_without_its_knob(tmp_path):
    directory = write_overlay(tmp_path / "no-knob", "prod", ["jwt"], NAMESPACE)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    del kustomization["configMapGenerator"]
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True)
    assert result.returncode != 0 and "ConfigMap" in result.stderr and "jwt" in result.stderr, result.stderr


@pytest.mark.parametrize("via", [GATEWAY, ACTIVATOR])
@pytest.mark.parametrize("path", PUBLIC_PATHS)
def test_public_requests_need_a_valid_token_whichever_hop_forwards_them(via, path):
    docs = rendered_setup("prod+jwt")
    assert outcome(docs, "sentiment", "transformer", public(path, GOOD, via)).reaches
    denied = outcome(docs, "sentiment", "transformer", public(path, None, via))
    assert (denied.status, denied.reason) == (403, "denied by sentiment-require-jwt")
    # Without the component the same request goes through: the DENY is what stops it.
    assert outcome(rendered_setup("prod"), "sentiment", "transformer", public(path, None, via)).reaches


@pytest.mark.parametrize(("token", "status"), [
    (Token(KNOB["issuer"], KNOB["audience"], verifies=False), 401),  # forged or expired
    (Token(KNOB["issuer"], "some-other-app"), 401),  # a token of the same tenant for another app
    (Token("https://login.microsoftonline.com/another-tenant/v2.0", KNOB["audience"]), 403),
])
def test_bad_tokens_are_refused(token, status):
    result = outcome(rendered_setup("prod+jwt"), "sentiment", "transformer", public("/bulk-predict", token))
    assert result.status == status, result


def test_every_path_but_the_open_ones_is_protected():
    """Negative matching: docs, OpenAPI, v2 metadata and any path spelled otherwise need a token too."""
    docs = rendered_setup("prod+jwt")
    for path in ("/docs", "/openapi.json", "/v2/models", "/v2/health/ready", "/BULK-PREDICT", "/bulk-predict/",
                 "/healthz/x", "/"):
        assert outcome(docs, "sentiment", "transformer", public(path, None, method="GET")).status == 403, path
    for path in ("/healthz", "/metrics", "/health", "/health?verbose=1"):
        assert outcome(docs, "sentiment", "transformer", public(path, None, ACTIVATOR, method="GET")).reaches, path


def test_knative_and_kubelet_keep_reaching_the_protected_pods():
    docs = rendered_setup("prod+jwt+grpc")
    for isvc, component, port in (("sentiment", "transformer", QUEUE_HTTP1), ("sentiment", "predictor", QUEUE_HTTP1),
                                  ("sentiment-grpc", "predictor", QUEUE_H2C)):
        _, container = pod(docs, isvc, component)
        activator_probe = Request(peer=ACTIVATOR, port=port, path="/healthz")
        assert outcome(docs, isvc, component, activator_probe).reaches, (isvc, component)
        scrape = Request(peer=AUTOSCALER, port=AUTOSCALER_SCRAPE, path="/metrics")
        assert outcome(docs, isvc, component, scrape).reaches, (isvc, component)
        kinds = [k for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in container]
        assert kinds
        for kind in kinds:
            probe = kubelet_probe(container, kind)
            result = outcome(docs, isvc, component, probe)
            assert result.reaches and "not captured" in result.reason, (isvc, component, kind, result)
            # Were it not rewritten, the kubelet's plaintext probe would be refused by STRICT mTLS.
            raw = Request(peer=None, port=container[kind].get("httpGet", {}).get("port", 8080), path="/")
            assert outcome(docs, isvc, component, raw).status == 403


@pytest.mark.parametrize("via", [TRANSFORMER, ACTIVATOR])
def test_the_transformer_reaches_the_predictor_without_a_token(via):
    """Decided: the hop is admitted by mesh identity. The transformer forwards no client header, and
    through the activator the predictor could not tell it from a public client, so no JWT rule
    selects the cluster-local predictor; sentiment-serving (overlays/prod) admits its callers."""
    docs = rendered_setup("prod+jwt")
    infer = Request(peer=via, port=QUEUE_HTTP1, path="/v2/models/sentiment/infer", method="POST")
    result = outcome(docs, "sentiment", "predictor", infer)
    assert result.reaches and result.reason == "allowed by sentiment-serving", result
    # A workload of another namespace still cannot call it, token or not.
    stranger = Request(peer=STRANGER, port=QUEUE_HTTP1, path="/v2/models/sentiment/infer", token=GOOD)
    assert outcome(docs, "sentiment", "predictor", stranger).status == 403


def test_public_grpc_needs_a_token_too():
    docs = rendered_setup("prod+jwt+grpc")
    path = "/inference.GRPCInferenceService/ModelInfer"
    assert outcome(docs, "sentiment-grpc", "predictor", public(path, GOOD, port=QUEUE_H2C)).reaches
    assert outcome(docs, "sentiment-grpc", "predictor", public(path, None, port=QUEUE_H2C)).status == 403


def test_dev_with_jwt_denies_tokenless_requests_without_any_allow_policy():
    docs = rendered_setup("dev+jwt")
    assert outcome(docs, "sentiment", "transformer", public("/bulk-predict", GOOD)).reaches
    assert outcome(docs, "sentiment", "transformer", public("/bulk-predict", None)).status == 403


def test_an_allow_policy_requiring_a_principal_would_not_have_composed_with_prod():
    """Why the component DENYs: ALLOW policies are OR-ed, and prod's sentiment-serving admits the
    gateway namespace, so an ALLOW on requestPrincipals would still let tokenless requests in."""
    docs = [d for d in rendered_setup("prod+jwt") if d["metadata"]["name"] != "sentiment-require-jwt"]
    allow = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
             "metadata": {"name": "allow-with-token", "namespace": NAMESPACE},
             "spec": {"selector": {"matchLabels": {"component": "transformer"}}, "action": "ALLOW",
                      "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}}
    validate(allow)
    result = outcome([*docs, allow], "sentiment", "transformer", public("/bulk-predict", None))
    assert result.reaches and result.reason == "allowed by sentiment-serving"


def test_istio_value_matching():
    assert value_matches("*", "x") and not value_matches("*", "") and not value_matches("*", None)
    assert value_matches("/v1/*", "/v1/models") and not value_matches("/v1/*", "/v2/models")
    assert value_matches("*/ready", "/v2/health/ready") and value_matches("/health", "/health")
    assert not value_matches("/health", "/healthz")


def jwt_section() -> str:
    return readme_section("**JWT on the public route (opt-in).**")


def test_readme_shows_how_to_turn_it_on_with_a_real_identity_provider():
    section = jwt_section()
    assert "https://login.microsoftonline.com/<tenant>/v2.0" in section
    assert "https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys" in section
    assert "Authorization: Bearer" in section and "kserve/components/jwt" in section
    # The README's knob block is the one the tests render, tenant aside.
    for literal in COMPONENT_KNOBS["jwt"]["literals"]:
        name = literal.split("=", 1)[0]
        assert re.search(rf"- {name}=\S+", section), name
    assert (KSERVE / "components" / "jwt" / "kustomization.yaml").is_file()
