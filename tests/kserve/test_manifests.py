"""Render every kustomize overlay and validate each document, strictly, offline."""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from harness.processes import REPO, SHARED, free_port, wait_until
from harness.readme import readme_section
from tests.kserve.kubectl import kustomize_version
from tests.kserve.rehearsal import quantity_bytes
from tests.kserve.rendering import (
    KSERVE,
    OVERLAYS,
    find,
    kubectl,
    render,
    rendered,
    rendered_prod_with_grpc,
    rendered_setup,
)

KUBERNETES_VERSION = "1.30"
CORE_KINDS = {"Namespace", "Secret", "Service", "ServiceAccount", "Deployment", "NetworkPolicy",
              "PodDisruptionBudget"}
CRD_SCHEMAS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice_v1beta1.json",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime_v1alpha1.json",
    ("networking.istio.io/v1", "VirtualService"): "virtualservice_v1.json",
    ("security.istio.io/v1", "AuthorizationPolicy"): "authorizationpolicy_v1.json",
    ("security.istio.io/v1", "PeerAuthentication"): "peerauthentication_v1.json",
    ("security.istio.io/v1", "RequestAuthentication"): "requestauthentication_v1.json",
}


def strict(schema: dict) -> dict:
    """Reject unknown fields wherever the structural schema lists its properties."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # Some CRD schemas describe only spec/status; every object also has these.
    schema["properties"].setdefault("apiVersion", {"type": "string"})
    schema["properties"].setdefault("kind", {"type": "string"})
    schema["properties"].setdefault("metadata", {"type": "object"})
    return schema


@cache
def crd_validator(filename: str) -> jsonschema.Draft7Validator:
    path = SHARED / "schemas" / filename
    if not path.is_file():
        pytest.skip(f"CRD schema {path} not found; set SHARED_DIR")
    return jsonschema.Draft7Validator(strict(json.loads(path.read_text())))


def validate(doc: dict) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        crd_validator(CRD_SCHEMAS[key]).validate(doc)
    elif doc["kind"] in CORE_KINDS:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    else:
        raise AssertionError(f"no schema to validate {key}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_document_validates_strictly(overlay):
    docs = rendered(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"InferenceService", "Deployment", "Service", "NetworkPolicy", "ServiceAccount"} <= kinds
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize(("kind", "mutate"), [
    ("InferenceService", lambda d: d["spec"]["predictor"].update(minReplica=0)),
    ("InferenceService", lambda d: d["spec"]["transformer"]["containers"][0].update(imagePullPolcy="Always")),
    ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={})),
    ("NetworkPolicy", lambda d: d["spec"].update(podSelecter={})),
])
def test_a_misspelled_field_fails_validation(kind, mutate):
    doc = copy.deepcopy(next(d for d in rendered("dev") if d["kind"] == kind))
    validate(doc)
    mutate(doc)
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(doc)


def test_prod_mistyped_istio_field_fails_validation():
    doc = copy.deepcopy(find(rendered("prod"), "VirtualService", "sentiment-public"))
    doc["spec"]["http"][0]["retries"]["retryOnn"] = "5xx"
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def isvc(overlay: str) -> dict:
    return find(rendered(overlay), "InferenceService", "sentiment")


def container(component: dict) -> dict:
    [c] = component["containers"]
    return c


def flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_service_is_serverless_with_both_components(overlay):
    svc = isvc(overlay)
    # "Knative" (formerly "Serverless", now a deprecated alias that some releases' update
    # validation compares as a different string: kserve/kserve PR 4608, issue 4798).
    assert svc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    for name in ("predictor", "transformer"):
        component = svc["spec"][name]
        assert container(component)["name"] == "kserve-container"
        assert component["scaleMetric"] == "concurrency"
        assert component["containerConcurrency"] >= component["scaleTarget"] > 0
        assert component["maxReplicas"] >= max(component["minReplicas"], 1)
        assert "autoscaling.knative.dev/scale-to-zero-pod-retention-period" in component["annotations"]
        assert "autoscaling.knative.dev/min-scale" not in component.get("annotations", {})  # KServe drops it


def test_dev_scales_everything_to_zero():
    svc = isvc("dev")
    assert svc["spec"]["predictor"]["minReplicas"] == 0
    assert svc["spec"]["transformer"]["minReplicas"] == 0
    assert all(d["metadata"].get("namespace") == "sentiment-dev" for d in rendered("dev") if d["kind"] != "Namespace")


def test_prod_predictor_scales_to_zero_and_transformer_stays_warm():
    svc = isvc("prod")
    assert svc["spec"]["predictor"]["minReplicas"] == 0
    assert svc["spec"]["transformer"]["minReplicas"] == 1


@cache
def _help(module: str) -> str:
    return subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                          check=True, timeout=120).stdout


def _dockerfile(name: str) -> str:
    return (REPO / name).read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_line_up_with_images_flags_and_ports(overlay):
    svc = isvc(overlay)
    for component, module in (("predictor", "predictor"), ("transformer", "transformer")):
        c = container(svc["spec"][component])
        args = flags(c["args"])
        dockerfile = _dockerfile(f"Dockerfile.{module}")
        assert f'ENTRYPOINT ["python", "-m", "{module}"]' in dockerfile
        assert re.search(r"^EXPOSE 8080 8081$", dockerfile, re.M)
        assert f"sentiment-{module}:" in c["image"]
        help_text = _help(module)
        for flag in args:
            assert f"--{flag}" in help_text, f"{component}: --{flag} is not a flag of python -m {module}"
        assert args["http_port"] == "8080" and args["grpc_port"] == "8081"
        assert c["ports"][0]["containerPort"] == 8080
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["port"] == 8080
        assert_locked_down(c["securityContext"], modelcar=component == "predictor")
        # Knative refuses a pod-level securityContext with its default feature flags.
        assert "securityContext" not in svc["spec"][component]
    predictor = container(svc["spec"]["predictor"])
    assert flags(predictor["args"])["model_dir"] == "/mnt/models"
    assert predictor["readinessProbe"]["httpGet"]["path"] == "/v2/models/sentiment/ready"
    # The modelcar (Dockerfile.model): served by the torch-free image.
    assert next(e for e in predictor["env"] if e["name"] == "STORAGE_URI")["value"].startswith(
        "oci://ghcr.io/example/sentiment-model:")
    transformer = container(svc["spec"]["transformer"])
    assert flags(transformer["args"])["predictor_protocol"] in ("v1", "v2", "grpc-v2")
    assert transformer["livenessProbe"]["httpGet"]["path"] == "/health"


def assert_locked_down(sec: dict, modelcar: bool = False) -> None:
    """Non-root, read-only root, no capabilities, seccomp. A container reading a modelcar sets no group:
    the sidecar KServe injects runs as gid 0 (its uid is in no /etc/passwd), and reaching its root
    filesystem through /proc needs the same gid (tests/kserve/rehearsal.py encodes both rules)."""
    assert sec["runAsNonRoot"] and sec["runAsUser"] == 1000
    assert ("runAsGroup" not in sec) if modelcar else sec["runAsGroup"] == 1000
    assert sec["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sec["readOnlyRootFilesystem"] and not sec["allowPrivilegeEscalation"]
    assert sec["capabilities"] == {"drop": ["ALL"]}


def _secret_refs(node):
    """Every (name, key) of a secretKeyRef anywhere in the document."""
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            yield node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]
        for value in node.values():
            yield from _secret_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _secret_refs(value)


def test_dev_secret_refs_resolve():
    docs = rendered("dev")
    refs = {ref for d in docs for ref in _secret_refs(d)}
    assert refs == {("sentiment-redis", "url"), ("sentiment-redis", "password")}
    secret = find(docs, "Secret", "sentiment-redis")
    assert {"url", "password"} <= set(secret["data"])


def test_prod_ships_no_secret_but_refers_to_the_documented_one():
    docs = rendered("prod")
    assert not [d for d in docs if d["kind"] == "Secret"]
    assert {name for d in docs for name, _ in _secret_refs(d)} == {"sentiment-redis"}
    assert "create secret generic sentiment-redis" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_only_transformer_pods_to_redis(overlay):
    docs = rendered(overlay)
    policy = find(docs, "NetworkPolicy", "sentiment-redis-from-transformer")
    redis_pod_labels = find(docs, "Deployment", "sentiment-redis")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= redis_pod_labels.items()
    # The labels KServe puts on the transformer's pods.
    transformer_pod_labels = {"serving.kserve.io/inferenceservice": "sentiment", "component": "transformer"}
    predictor_pod_labels = {"serving.kserve.io/inferenceservice": "sentiment", "component": "predictor"}
    [rule] = policy["spec"]["ingress"]
    [peer] = rule["from"]
    selector = peer["podSelector"]["matchLabels"]
    assert selector.items() <= transformer_pod_labels.items()
    assert not selector.items() <= predictor_pod_labels.items()
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    service = find(docs, "Service", "sentiment-redis")
    assert service["spec"]["selector"].items() <= redis_pod_labels.items()
    url = next(d for d in docs if d["kind"] == "Secret")["data"]["url"] if overlay == "dev" else None
    if url:
        import base64
        assert f"//{service['metadata']['name']}:6379/" in base64.b64decode(url).decode()


def redis_container(docs) -> dict:
    [c] = find(docs, "Deployment", "sentiment-redis")["spec"]["template"]["spec"]["containers"]
    return c


def redis_config(c: dict) -> dict[str, str]:
    """The redis.conf lines the container's start-up script writes, as {directive: value}."""
    script = c["args"][0]
    lines = re.findall(r'^\s*["\'](\S+ [^"\']*|save "")["\'] ?\\?$', script, re.M)
    return dict(line.split(" ", 1) for line in lines)


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "mb": 1, "gb": 1024}
    number, unit = re.fullmatch(r"(\d+)(\w*)", quantity).groups()
    return int(number) * units[unit]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_is_a_bounded_cache_with_auth_and_no_password_in_arguments(overlay):
    c = redis_container(rendered(overlay))
    assert c["command"] == ["sh", "-c"] and len(c["args"]) == 1
    script = c["args"][0]
    assert script.rstrip().endswith('exec redis-server /data/redis.conf "$@"')
    assert "/data" in {m["mountPath"] for m in c["volumeMounts"]}
    config = redis_config(c)
    assert config["requirepass"] == "$REDIS_PASSWORD"
    assert config["maxmemory-policy"] == "allkeys-lru"
    assert config["appendonly"] == "no" and config["save"] == '""'
    # Below the container limit with room for fragmentation, client buffers and the process.
    assert mebibytes(config["maxmemory"]) <= 0.75 * mebibytes(c["resources"]["limits"]["memory"])
    # Nothing passes the password on a command line: not the server, not the probes.
    assert "$(REDIS_PASSWORD)" not in json.dumps(c)
    assert " -a " not in json.dumps(c) and "--requirepass" not in json.dumps(c)
    password_ref = {"secretKeyRef": {"name": "sentiment-redis", "key": "password"}}
    assert {"name": "REDISCLI_AUTH", "valueFrom": password_ref} in c["env"]
    assert "redis-cli ping" in " ".join(c["readinessProbe"]["exec"]["command"])
    assert c["securityContext"]["readOnlyRootFilesystem"]


def test_redis_image_is_a_patched_release():
    image = redis_container(rendered("prod"))["image"]
    version = tuple(int(x) for x in re.fullmatch(r"redis:(\d+)\.(\d+)\.(\d+)-alpine", image).groups())
    # CVE-2026-23479 (use-after-free, redis-server 7.2.0 through 8.6.2) is fixed in 8.6.3.
    assert version >= (8, 6, 3)


def test_redis_start_up_script_runs_and_keeps_the_password_out_of_argv(tmp_path):
    """Run the manifest's own script with the local redis-server (its /data moved to a temp dir)."""
    redis_server, redis_cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not (redis_server and redis_cli):
        pytest.skip("redis-server/redis-cli not installed")
    c = redis_container(rendered("dev"))
    port = free_port()
    script = c["args"][0].replace("/data", str(tmp_path))
    password = "s3cret-Only.For_tests"
    env = {"PATH": os.environ["PATH"], "REDIS_PASSWORD": password, "REDISCLI_AUTH": password}
    refused = subprocess.run([*c["command"], script], env={**env, "REDIS_PASSWORD": "has space"},
                             capture_output=True, text=True, timeout=10)
    assert refused.returncode != 0 and "REDIS_PASSWORD must" in refused.stderr
    server = subprocess.Popen([*c["command"], script, "redis", "--port", str(port)], env=env, stdout=subprocess.DEVNULL)
    try:
        probe = [*c["readinessProbe"]["exec"]["command"][:2],
                 c["readinessProbe"]["exec"]["command"][2].replace("redis-cli", f"redis-cli -p {port}")]
        wait_until(lambda: subprocess.run(probe, env=env, capture_output=True).returncode == 0, 10,
                   "redis readiness probe", server)
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline and cmdline.startswith(b"redis-server")
        assert (tmp_path / "redis.conf").stat().st_mode & 0o077 == 0
        unauthenticated = subprocess.run([redis_cli, "-p", str(port), "get", "k"], capture_output=True, text=True,
                                         env={"PATH": env["PATH"]})
        assert "NOAUTH" in unauthenticated.stdout + unauthenticated.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)


def serving_pod_labels(svc: dict, component: str) -> dict:
    """The labels KServe puts on a component's pods: the InferenceService's own labels plus its
    name and component (kserve components/predictor.go buildObjectMeta, transformer.go)."""
    return {**svc["metadata"].get("labels", {}), **svc["spec"][component].get("labels", {}),
            "serving.kserve.io/inferenceservice": svc["metadata"]["name"], "component": component}


@pytest.mark.parametrize("setup", ["prod", "prod+grpc"])
def test_prod_istio_policies_cover_every_serving_pod_and_only_the_transformer_reaches_redis(setup):
    docs = rendered("prod") if setup == "prod" else rendered_prod_with_grpc()
    assert find(docs, "PeerAuthentication", "default")["spec"]["mtls"]["mode"] == "STRICT"
    serving = find(docs, "AuthorizationPolicy", "sentiment-serving")["spec"]
    selector = serving["selector"]["matchLabels"]
    for svc in (d for d in docs if d["kind"] == "InferenceService"):
        for component in ("predictor", "transformer"):
            if component in svc["spec"]:
                assert selector.items() <= serving_pod_labels(svc, component).items(), svc["metadata"]["name"]
    redis_pod = find(docs, "Deployment", "sentiment-redis")["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= redis_pod.items()  # ALLOW policies add up: Redis keeps its own
    [rule] = serving["rules"]
    assert rule["from"][0]["source"]["namespaces"] == ["istio-system", "knative-serving", "sentiment-prod"]
    redis_policy = find(docs, "AuthorizationPolicy", "sentiment-redis")
    sa = find(docs, "InferenceService", "sentiment")["spec"]["transformer"]["serviceAccountName"]
    find(docs, "ServiceAccount", sa)
    principals = redis_policy["spec"]["rules"][0]["from"][0]["source"]["principals"]
    assert principals == [f"cluster.local/ns/sentiment-prod/sa/{sa}"]
    pdb_selectors = [d["spec"]["selector"]["matchLabels"] for d in docs if d["kind"] == "PodDisruptionBudget"]
    for svc in (d for d in docs if d["kind"] == "InferenceService"):
        for component in ("predictor", "transformer"):
            if component in svc["spec"]:
                labels = serving_pod_labels(svc, component)
                assert any(sel.items() <= labels.items() for sel in pdb_selectors), (svc["metadata"]["name"], component)


def test_prod_renders_exactly_one_inference_service():
    assert [d["metadata"]["name"] for d in rendered("prod") if d["kind"] == "InferenceService"] == ["sentiment"]


def test_grpc_component_renders_validates_and_is_locked_down_like_the_main_one():
    docs = rendered_prod_with_grpc()
    assert sorted(d["metadata"]["name"] for d in docs if d["kind"] == "InferenceService") == ["sentiment",
                                                                                              "sentiment-grpc"]
    for doc in docs:
        validate(doc)
        assert doc["metadata"].get("namespace", "sentiment-prod") == "sentiment-prod"
    grpc = find(docs, "InferenceService", "sentiment-grpc")
    main = find(docs, "InferenceService", "sentiment")
    assert set(grpc["spec"]) == {"predictor"}
    c = container(grpc["spec"]["predictor"])
    assert c["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    assert flags(c["args"])["grpc_port"] == "8081"
    assert "securityContext" not in grpc["spec"]["predictor"]
    assert_locked_down(c["securityContext"], modelcar=True)
    main_predictor = container(main["spec"]["predictor"])
    assert c["image"] == main_predictor["image"] and c["env"] == main_predictor["env"]
    assert flags(c["args"]).items() >= {k: v for k, v in flags(main_predictor["args"]).items()}.items()
    # Public on purpose: gRPC clients come through the ingress gateway.
    assert "networking.knative.dev/visibility" not in grpc["metadata"]["labels"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cache_namespace_is_a_literal_equal_to_the_overlay_namespace(overlay):
    svc = isvc(overlay)
    env = {e["name"]: e for e in container(svc["spec"]["transformer"])["env"]}
    assert env["CACHE_NAMESPACE"] == {"name": "CACHE_NAMESPACE", "value": svc["metadata"]["namespace"]}


def all_inference_services():
    for setup, docs in (("dev", rendered("dev")), ("prod", rendered("prod")), ("prod+grpc", rendered_prod_with_grpc())):
        for svc in (d for d in docs if d["kind"] == "InferenceService"):
            yield f"{setup}:{svc['metadata']['name']}", svc


def every_inference_service_and_hf_download():
    yield from all_inference_services()
    for svc in (d for d in rendered_setup("prod+hf-download") if d["kind"] == "InferenceService"):
        yield f"prod+hf-download:{svc['metadata']['name']}", svc


def test_every_model_location_pins_the_model():
    seen = set()
    for where, svc in every_inference_service_and_hf_download():
        predictor = svc["spec"]["predictor"]
        # KServe reads STORAGE_URI from a custom container's env; a storageUri field would be refused.
        assert "storageUri" not in predictor and "storageUris" not in predictor
        c = container(predictor)
        [uri] = [e["value"] for e in c["env"] if e["name"] == "STORAGE_URI"]
        scheme = uri.split("://")[0]
        seen.add(scheme)
        if scheme == "oci":
            # A modelcar: a named model tag or a digest, never a moving `latest`; the torch-free image
            # serves its shipped export.
            assert re.fullmatch(r"oci://[\w.-]+(/[\w.-]+)*/sentiment-model(:[\w.-]+|@sha256:[0-9a-f]{64})", uri), where
            assert not uri.endswith(":latest"), where
            assert re.search(r"/sentiment-predictor:", c["image"]), where
        else:
            # hf://<org>/<model>:<commit> (kserve_storage.py _download_hf: revision after ':'); a download
            # has no ONNX export, so the torch image exports it at start-up.
            assert re.fullmatch(r"hf://[\w.-]+/[\w.-]+:[0-9a-f]{40}", uri), (where, uri)
            assert re.search(r"/sentiment-predictor-torch:", c["image"]), where
            limits = c["resources"]["limits"]["ephemeral-storage"]
            assert quantity_bytes(limits) >= 6 * 2**30, where  # the repository snapshot lands in the pod
    assert seen == {"oci", "hf"}


def test_the_production_modelcar_names_the_revision_the_hf_download_pins():
    def uri(docs):
        return next(e["value"] for e in container(find(docs, "InferenceService", "sentiment")["spec"]["predictor"])[
            "env"] if e["name"] == "STORAGE_URI")

    commit = uri(rendered_setup("prod+hf-download")).rsplit(":", 1)[1]
    assert uri(rendered("prod")).endswith(f"-{commit[:7]}")


def test_every_component_runs_one_worker():
    for where, svc in all_inference_services():
        for component in ("predictor", "transformer"):
            if component in svc["spec"]:
                args = container(svc["spec"][component])["args"]
                # KServe skips its own --workers when any argument starts with --workers.
                assert [a for a in args if a.startswith("--workers")] == ["--workers=1"], (where, component)


def test_the_inference_service_is_cluster_local_and_the_public_route_goes_through_the_local_gateway():
    for overlay in OVERLAYS:
        svc = isvc(overlay)
        # On the InferenceService: KServe copies its labels to the Knative Services it creates.
        assert svc["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
        for component in ("predictor", "transformer"):
            assert "networking.knative.dev/visibility" not in svc["spec"][component].get("annotations", {})
    docs = rendered("prod")
    svc = isvc("prod")
    [route] = find(docs, "VirtualService", "sentiment-public")["spec"]["http"]
    name, namespace = svc["metadata"]["name"], svc["metadata"]["namespace"]
    assert route["rewrite"]["authority"] == f"{name}.{namespace}.svc.cluster.local"
    assert route["route"][0]["destination"]["host"] == "knative-local-gateway.istio-system.svc.cluster.local"


def test_the_mesh_knob_moves_every_gateway_and_revision_reference(tmp_path):
    """Switch overlays/prod to the AKS Istio add-on in its one place and check the whole output."""
    tree = tmp_path / "kserve"
    shutil.copytree(KSERVE, tree)
    kustomization = tree / "overlays" / "prod" / "kustomization.yaml"
    text = kustomization.read_text()
    assert text.count("istioRevision=default") == 1 and text.count("gatewayNamespace=istio-system") == 1
    kustomization.write_text(text.replace("istioRevision=default", "istioRevision=asm-1-25")
                             .replace("gatewayNamespace=istio-system", "gatewayNamespace=aks-istio-ingress"))
    docs = render(tree / "overlays" / "prod")
    assert "istio-system" not in yaml.safe_dump_all(docs)
    assert not [d for d in docs if d["kind"] == "ConfigMap"]  # the knob itself is never applied
    assert find(docs, "Namespace", "sentiment-prod")["metadata"]["labels"] == {"istio.io/rev": "asm-1-25"}
    serving = find(docs, "AuthorizationPolicy", "sentiment-serving")
    assert serving["spec"]["rules"][0]["from"][0]["source"]["namespaces"][0] == "aks-istio-ingress"
    [route] = find(docs, "VirtualService", "sentiment-public")["spec"]["http"]
    assert route["route"][0]["destination"]["host"] == "knative-local-gateway.aks-istio-ingress.svc.cluster.local"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespaces_get_sidecars_by_revision_label(overlay):
    [ns] = [d for d in rendered(overlay) if d["kind"] == "Namespace"]
    assert ns["metadata"]["labels"] == {"istio.io/rev": "default"}


def seconds(duration: str) -> int:
    return int(re.fullmatch(r"(\d+)s", duration).group(1))


def test_cold_start_budgets_line_up():
    """A request that misses the cache while the predictor is scaled to zero is held by Knative's
    activator until a pod is ready, so every timeout on its way outlasts the cold-start budget
    (the startup probe's), and Knative's progress deadline outlasts the first rollout."""
    for where, svc in all_inference_services():
        predictor = svc["spec"]["predictor"]
        c = container(predictor)
        probe = c["startupProbe"]
        budget = probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]
        # A fresh pod may export ONNX first: 21 s measured on 2 cores (README, bench.cold_start).
        assert budget >= 120, where
        assert probe["httpGet"] == c["readinessProbe"]["httpGet"]
        assert "initialDelaySeconds" not in c["livenessProbe"]  # the startup probe holds it back
        assert predictor["timeout"] >= budget, where
        # Image pull and the storage initializer's download come before the probe starts.
        assert seconds(predictor["annotations"]["serving.knative.dev/progress-deadline"]) >= budget + 300, where
        if "transformer" in svc["spec"]:
            transformer = svc["spec"]["transformer"]
            call_timeout = int(flags(container(transformer)["args"])["predictor_request_timeout_seconds"])
            assert call_timeout >= budget and transformer["timeout"] > call_timeout, where
    svc = isvc("prod")
    [route] = find(rendered("prod"), "VirtualService", "sentiment-public")["spec"]["http"]
    call_timeout = int(flags(container(svc["spec"]["transformer"])["args"])["predictor_request_timeout_seconds"])
    assert seconds(route["retries"]["perTryTimeout"]) > call_timeout
    assert seconds(route["timeout"]) >= seconds(route["retries"]["perTryTimeout"])
    assert svc["spec"]["transformer"]["timeout"] >= seconds(route["timeout"])


def every_container(docs):
    for doc in docs:
        if doc["kind"] == "InferenceService":
            for component in ("predictor", "transformer"):
                if component in doc["spec"]:
                    yield from ((doc, c) for c in doc["spec"][component]["containers"])
        elif doc["kind"] == "Deployment":
            yield from ((doc, c) for c in doc["spec"]["template"]["spec"]["containers"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_requests_and_limits_ephemeral_storage(overlay):
    for doc, c in every_container(rendered(overlay)):
        resources = c["resources"]
        assert resources["requests"]["ephemeral-storage"] and resources["limits"]["ephemeral-storage"], doc[
            "metadata"]["name"]


ENTRYPOINTS = {"sentiment-predictor": ["python", "-m", "predictor"],
               "sentiment-transformer": ["python", "-m", "transformer"]}
RUNNABLE = {"sh", "redis-server", "redis-cli"}


@pytest.mark.parametrize("setup", ["dev", "prod", "prod+grpc"])
def test_containers_stay_runnable_from_command_args_and_env_alone(setup):
    """What a generic runner needs: a known executable, env from literals or Secrets, and every
    $(VAR) in command/args naming a declared variable (Kubernetes expands only those)."""
    docs = rendered(setup) if setup != "prod+grpc" else rendered_prod_with_grpc()
    for _, c in every_container(docs):
        image = c["image"].rsplit("/", 1)[-1].split(":")[0]
        if "command" in c:
            assert c["command"][0] in RUNNABLE, (image, c["command"])
        else:
            assert image in ENTRYPOINTS, image
        declared = set()
        for env in c.get("env", []):
            assert set(env) in ({"name", "value"}, {"name", "valueFrom"}), env
            if "valueFrom" in env:
                assert set(env["valueFrom"]) == {"secretKeyRef"}, env
            declared.add(env["name"])
        for arg in c.get("command", []) + c.get("args", []):
            assert set(re.findall(r"\$\((\w+)\)", arg)) <= declared, arg


def test_kustomizations_use_current_fields_and_render_without_warnings():
    for path in KSERVE.rglob("kustomization.yaml"):
        fields = set(yaml.safe_load(path.read_text()))
        assert not fields & {"patchesJson6902", "patchesStrategicMerge", "bases", "vars"}, path
    for overlay in OVERLAYS:
        result = subprocess.run([kubectl(), "kustomize", str(KSERVE / "overlays" / overlay)], capture_output=True,
                                text=True, check=True)
        assert "deprecated" not in result.stderr.lower(), result.stderr


def deploying_section() -> str:
    return readme_section("## Deploying on KServe", "\n## ")


def test_readme_states_the_cluster_prerequisites_and_the_opt_ins():
    section = deploying_section()
    # STRICT mTLS needs sidecars on Knative's activator and autoscaler.
    assert "kubectl label namespace knative-serving istio-injection=enabled" in section
    assert "configuraing-istio-mtls-on-knative-serving.md" in section
    assert "Knative Serving 1.15" in section and "KServe 0.21" in section
    assert "kubernetes.podspec-" in section
    for path in ("kserve/components/grpc", "kserve/components/mesh", "kserve/components/hf-download",
                 "python -m predictor.export", "Dockerfile.model"):
        assert path in section
        if path.startswith("kserve/"):
            assert (REPO / path / "kustomization.yaml").is_file()
    hf_predictor = find(rendered_setup("prod+hf-download"), "InferenceService", "sentiment")["spec"]["predictor"]
    hf = next(e["value"] for e in container(hf_predictor)["env"] if e["name"] == "STORAGE_URI")
    assert f"--revision {hf.rsplit(':', 1)[1]}" in section
    # The modelcar path comes first.
    assert section.index("Dockerfile.model") < section.index("kserve/components/hf-download")


@pytest.mark.parametrize(("prints", "version"), [
    ("Client Version: v1.33.9\nKustomize Version: v5.6.0\n", (5, 6)),
    # Debian's kubernetes-client: kubectl 1.20 with kustomize v2.0.3, which does not even say so.
    ('Client Version: version.Info{Major:"1", Minor:"20", GitVersion:"v1.20.2"}\n', None),
])
def test_a_kubectl_too_old_for_kserve_is_recognised(tmp_path, prints, version):
    fake = tmp_path / "kubectl"
    fake.write_text(f"#!/bin/sh\nprintf '%s' '{prints}'\n")
    fake.chmod(0o755)
    assert kustomize_version(str(fake)) == version


DOCKERFILES = sorted(p.name for p in REPO.glob("Dockerfile.*"))
SERVICE_DOCKERFILES = ["Dockerfile.predictor", "Dockerfile.predictor-torch", "Dockerfile.transformer"]


def test_dockerfiles_pass_hadolint():
    assert sorted([*SERVICE_DOCKERFILES, "Dockerfile.model"]) == DOCKERFILES
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, *DOCKERFILES], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_image_takes_its_base_as_an_argument_defaulting_to_the_official_python(name):
    dockerfile = _dockerfile(name)
    assert "ARG BASE=python:3.11-slim-bookworm" in dockerfile
    final = dockerfile[dockerfile.rindex("\nFROM "):]
    assert final.startswith("\nFROM ${BASE}\n")


@pytest.mark.parametrize("name", SERVICE_DOCKERFILES)
def test_images_compile_bytecode_at_build_and_copy_the_shared_package(name):
    dockerfile = _dockerfile(name)
    # Read-only root filesystem at run time: bytecode must already be in the image.
    joined = re.sub(r"\\\n\s*", " ", dockerfile)  # one line per instruction
    compile_all = r"python -m compileall .*--invalidation-mode unchecked-hash .*/opt/venv/lib/python3.11/site-packages"
    assert re.search(compile_all, joined)
    for package in ("serving", "predictor", "transformer"):
        assert f"COPY {package} ./{package}" in dockerfile


def test_baked_predictor_image_ships_its_onnx_export():
    dockerfile = _dockerfile("Dockerfile.predictor-torch")
    bake = dockerfile[dockerfile.index('if [ -n "$BAKED_MODEL" ]'):]
    bake = bake[:bake.index("fi")]
    assert "cp -r" in bake and "python -m predictor.export /mnt/models" in bake


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_the_context_small_but_complete():
    patterns = dockerignore_patterns()
    assert {".git", ".venv", "tests", "bench", "kserve"} <= set(patterns)
    copied = set()
    for name in SERVICE_DOCKERFILES:
        for line in re.findall(r"^COPY (?!--from)(.+) \S+$", _dockerfile(name), re.M):
            copied.update(line.split())
    assert copied == {"pyproject.toml", "README.md", "constraints.txt", "serving", "predictor", "transformer"}
    for path in copied:
        assert not any(fnmatch.fnmatch(path, p.lstrip("/")) for p in patterns), path


def installs(dockerfile: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    return [line for line in joined.splitlines() if line.startswith("RUN") and "pip install" in line]


def test_only_the_torch_image_installs_torch():
    for name, extra in (("Dockerfile.transformer", '".[transformer]"'), ("Dockerfile.predictor", '".[predictor]"')):
        [install] = installs(_dockerfile(name))
        assert extra in install and "torch" not in install, name
    torch_image = _dockerfile("Dockerfile.predictor-torch")
    # The CPU build by default; TORCH_PIP_ARGS says where else pip finds it (harness/images.py passes local disk).
    assert 'ARG TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"' in torch_image
    assert any("torch==2.13.0" in line for line in installs(torch_image))
    assert any('".[predictor,torch]"' in line for line in installs(torch_image))


def test_the_modelcar_is_what_kserve_runs_beside_the_predictor():
    """KServe runs the image with args `sh -c "ln -sf /proc/$$/root/models /mnt/models && sleep infinity"`
    and no command, after an init container checks that /models is not empty (kserve/kserve
    pkg/utils/storage.go @aaac4e2, CreateModelcarContainer, CreateModelcarInitContainer): the args
    must reach a shell, so the image has no ENTRYPOINT, and the model is at /models."""
    dockerfile = _dockerfile("Dockerfile.model")
    assert "ENTRYPOINT" not in re.sub(r"#.*", "", dockerfile)
    final = dockerfile[dockerfile.rindex("\nFROM "):]
    assert "COPY --from=export /tmp/models /models" in final
    assert "python -m predictor.export /tmp/source --out /tmp/models" in dockerfile
