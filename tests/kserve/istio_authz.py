"""What an Istio sidecar does with an inbound request, for the rules our manifests use: STRICT mTLS,
RequestAuthentication (JWT) and AuthorizationPolicy, as plain functions over rendered documents.

A field of those kinds that is not modelled here raises, so a manifest cannot silently rely on
semantics this file does not encode.

Sources (istio/istio @86c9f01fd73 unless noted):
- Evaluation order (istio/api security/v1beta1/authorization_policy.proto, package comment): any
  matching DENY denies; else, no ALLOW policy for the workload allows; else any matching ALLOW
  allows; else deny (403). CUSTOM and AUDIT are not used here.
- A policy applies to the workloads of its namespace whose labels include `selector.matchLabels`
  (all of them without a selector). A policy matches when any rule matches; a rule when its
  `from` (any source), `to` (any operation) and `when` all match, an absent one matching anything;
  within a source or operation every field given must match; an ALLOW or DENY without rules
  matches nothing.
- Values (pilot/pkg/security/authz/matcher/string.go, StringMatcherWithPrefix): `*` is any
  non-empty value, `x*` a prefix, `*x` a suffix, anything else exact. A `not*` field matches when
  none of its values match, including when the attribute is absent (no peer, no request principal).
  Paths match without the query string.
- Peer identity comes from the mTLS certificate: `cluster.local/ns/<namespace>/sa/<account>`;
  `namespaces` match its namespace. PeerAuthentication STRICT refuses plaintext on captured ports.
- RequestAuthentication (pilot/pkg/security/authn/policy_applier.go, convertToEnvoyJwtConfig):
  "reject all requests with invalid token ... if no token provided, the request is allowed", via
  Envoy's `{provider OR allow_missing}`; a token of an issuer no rule names counts as no token
  (allow_missing). A valid token's request principal is `<iss>/<sub>`; a bad signature or an
  audience outside `audiences` is refused with 401.
- Ports the sidecar does not capture (manifests/charts/istio-control/istio-discovery/files/
  injection-template.yaml, istio-iptables `-d 15090,15021,<status port 15020>`): nothing on them
  meets these checks. Kubelet probes are rewritten to `GET :15020/app-health/<container>/<readyz|
  livez|startupz>` (pkg/kube/inject/app_probe.go, convertAppProber; status.FormatProberURL), and
  pilot-agent calls the container from 127.0.0.6 (pilot/cmd/pilot-agent/status/server.go,
  UpstreamLocalAddressIPv4), which istio-iptables leaves alone (tools/istio-iptables/pkg/capture/
  run.go: `-o lo -s 127.0.0.6/32 -j RETURN`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TRUST_DOMAIN = "cluster.local"
NOT_CAPTURED_PORTS = {15020, 15021, 15090}
ISTIO_STATUS_PORT = 15020
PROBE_URL_KIND = {"readinessProbe": "readyz", "livenessProbe": "livez", "startupProbe": "startupz"}

SOURCE_FIELDS = {"principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces",
                 "notNamespaces"}
OPERATION_FIELDS = {"paths", "notPaths", "ports", "notPorts", "methods", "notMethods", "hosts", "notHosts"}
JWT_RULE_FIELDS = {"issuer", "jwksUri", "audiences", "fromHeaders", "forwardOriginalToken"}


def principal(namespace: str, service_account: str) -> str:
    return f"{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True)
class Token:
    """A JWT in `Authorization: Bearer ...`: its claims, and whether the issuer's keys verify it."""

    issuer: str
    audience: str
    subject: str = "client-1"
    verifies: bool = True


@dataclass(frozen=True)
class Request:
    """One request as the receiving pod's sidecar sees it."""

    peer: str | None
    """The caller's mTLS principal; None for plaintext."""
    port: int
    path: str
    method: str = "GET"
    host: str = ""
    token: Token | None = None


@dataclass(frozen=True)
class Outcome:
    status: int
    """200: the request reaches the container (it may still answer an error); 401 or 403: refused."""
    reason: str

    @property
    def reaches(self) -> bool:
        return self.status == 200


def kubelet_probe(container: dict, kind: str) -> Request:
    """The request the kubelet sends for `container`'s `kind` probe once Istio's injector rewrote it."""
    assert kind in container, f"{container['name']} has no {kind}"
    return Request(peer=None, port=ISTIO_STATUS_PORT,
                   path=f"/app-health/{container['name']}/{PROBE_URL_KIND[kind]}")


def decide(docs: Iterable[dict], namespace: str, labels: dict[str, str], request: Request) -> Outcome:
    """What the sidecar of a pod with `labels` in `namespace` does with `request`."""
    docs = [d for d in docs if d.get("metadata", {}).get("namespace") == namespace]
    if request.port in NOT_CAPTURED_PORTS:
        return Outcome(200, f"port {request.port} is not captured by the sidecar")
    if request.peer is None and any(_strict(d, labels) for d in docs):
        return Outcome(403, "plaintext refused by STRICT mTLS")
    request_principal, refused = _authenticate(docs, labels, request.token)
    if refused:
        return Outcome(401, refused)
    policies = [d for d in docs if d["kind"] == "AuthorizationPolicy" and _selects(d, labels)]
    for policy in policies:
        _check_supported(policy)
    for policy in (p for p in policies if p["spec"]["action"] == "DENY"):
        if _policy_matches(policy, request, request_principal):
            return Outcome(403, f"denied by {policy['metadata']['name']}")
    allows = [p for p in policies if p["spec"].get("action", "ALLOW") == "ALLOW"]
    if not allows:
        return Outcome(200, "no ALLOW policy for this workload")
    for policy in allows:
        if _policy_matches(policy, request, request_principal):
            return Outcome(200, f"allowed by {policy['metadata']['name']}")
    return Outcome(403, "no ALLOW policy matches")


def _selects(doc: dict, labels: dict[str, str]) -> bool:
    wanted = doc["spec"].get("selector", {}).get("matchLabels", {})
    return wanted.items() <= labels.items()


def _strict(doc: dict, labels: dict[str, str]) -> bool:
    return doc["kind"] == "PeerAuthentication" and _selects(doc, labels) and \
        doc["spec"].get("mtls", {}).get("mode") == "STRICT"


def _authenticate(docs: list[dict], labels: dict[str, str], token: Token | None) -> tuple[str | None, str | None]:
    """(request principal or None, why the request is refused with 401 or None)."""
    rules = [rule for d in docs if d["kind"] == "RequestAuthentication" and _selects(d, labels)
             for rule in d["spec"]["jwtRules"]]
    for rule in rules:
        unknown = set(rule) - JWT_RULE_FIELDS
        assert not unknown, f"jwtRules fields not modelled: {unknown}"
        assert rule.get("fromHeaders", [{"name": "Authorization", "prefix": "Bearer "}]) == \
            [{"name": "Authorization", "prefix": "Bearer "}], "only Authorization: Bearer is modelled"
    if token is None:
        return None, None
    issued = [rule for rule in rules if rule["issuer"] == token.issuer]
    if not issued:
        return None, None
    if not token.verifies:
        return None, "Jwt verification fails"
    if not any(not rule.get("audiences") or token.audience in rule["audiences"] for rule in issued):
        return None, "Audiences in Jwt are not allowed"
    return f"{token.issuer}/{token.subject}", None


def _check_supported(policy: dict) -> None:
    spec = policy["spec"]
    assert set(spec) <= {"selector", "action", "rules"}, f"{policy['metadata']['name']}: {set(spec)} not modelled"
    assert spec.get("action", "ALLOW") in ("ALLOW", "DENY"), spec["action"]
    for rule in spec.get("rules", []):
        assert set(rule) <= {"from", "to"}, f"{policy['metadata']['name']}: rule fields {set(rule)} not modelled"
        for entry in rule.get("from", []):
            assert set(entry["source"]) <= SOURCE_FIELDS, set(entry["source"])
        for entry in rule.get("to", []):
            assert set(entry["operation"]) <= OPERATION_FIELDS, set(entry["operation"])


def value_matches(pattern: str, value: str | None) -> bool:
    if not value:
        return False
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _field_matches(spec: dict, name: str, value: str | None) -> bool:
    """`name` and `not<Name>` of a source or operation against one attribute."""
    negative = "not" + name[0].upper() + name[1:]
    if name in spec and not any(value_matches(p, value) for p in spec[name]):
        return False
    return not (negative in spec and any(value_matches(p, value) for p in spec[negative]))


def _source_matches(source: dict, request: Request, request_principal: str | None) -> bool:
    peer_namespace = request.peer.split("/ns/", 1)[1].split("/", 1)[0] if request.peer else None
    return (_field_matches(source, "principals", request.peer)
            and _field_matches(source, "requestPrincipals", request_principal)
            and _field_matches(source, "namespaces", peer_namespace))


def _operation_matches(operation: dict, request: Request) -> bool:
    return (_field_matches(operation, "paths", request.path.split("?", 1)[0])
            and _field_matches(operation, "ports", str(request.port))
            and _field_matches(operation, "methods", request.method)
            and _field_matches(operation, "hosts", request.host))


def _policy_matches(policy: dict, request: Request, request_principal: str | None) -> bool:
    for rule in policy["spec"].get("rules", []):
        sources = rule.get("from")
        operations = rule.get("to")
        if sources is not None and not any(_source_matches(s["source"], request, request_principal) for s in sources):
            continue
        if operations is not None and not any(_operation_matches(o["operation"], request) for o in operations):
            continue
        return True
    return False
