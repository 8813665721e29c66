"""The pod spec KServe builds for a predictor that names a ServingRuntime, and what its pod webhook
then adds for the model's storage, as plain functions over rendered documents.

Sources (kserve/kserve @aaac4e294):
- pkg/controller/v1beta1/inferenceservice/components/predictor.go, buildPodSpec: the runtime's
  `kserve-container` merged with `predictor.model`'s container fields
  (utils.MergeServingRuntimeAndInferenceServiceSpecs -> MergeRuntimeContainers: a strategic merge
  patch, pkg/utils/container_merge.go MergeContainerWithPatch, then args concatenated runtime +
  InferenceService), placeholders rendered (ReplacePlaceholders: the container's JSON as a Go
  template over the InferenceService's ObjectMeta), the image tag left alone without a
  runtimeVersion or GPU (UpdateImageTag), and the pod fields merged (MergePodSpec: the runtime's
  nodeSelector, affinity, tolerations, volumes, imagePullSecrets, schedulerName and resourceClaims,
  strategic-merged with the predictor's own pod fields). buildPredictorResources then adds
  INFERENCE_SERVICE_NAME to every container.
- Strategic merge of a Container (k8s.io/api core/v1 types.go patchMergeKey tags): env by `name`,
  ports by `containerPort`, volumeMounts by `mountPath`, objects merged key by key, other lists
  replaced; an env entry keeps one of value/valueFrom, the InferenceService's
  (container_merge.go, reconcileEnvValueConflicts). Pod volumes and imagePullSecrets merge by `name`.
- pkg/webhook/admission/pod/storage_initializer_injector.go: for the storage URI (predictor.model
  storageUri, or STORAGE_URI on a custom container), `oci://` with modelcars enabled gets
  InjectModelcar -> pkg/utils/storage.go ConfigureModelcarToContainer: MODEL_INIT_MODE=async on
  kserve-container, an emptyDir `kserve-provision-location` mounted at /mnt (the parent of
  /mnt/models), a `modelcar` sidecar of the URI's image running
  `ln -sf /proc/$$/root/models /mnt/models && sleep infinity`, a `modelcar-init` init container and
  shareProcessNamespace; any other scheme gets InjectStorageInitializer: a `storage-initializer`
  init container downloading into the same emptyDir, mounted read-only at /mnt/models.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

# InferenceService component fields KServe consumes itself; the rest of a component is the pod
# spec it hands to Knative (kserve/kserve pkg/apis/serving/v1beta1/component.go
# @0217bdabaaa250485b336805da1aed04960dc758, ComponentExtensionSpec; storageUris and the
# predictor's model-format fields are read by KServe, not copied into the pod spec).
KSERVE_COMPONENT_FIELDS = frozenset({
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "autoScaling",
    "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "labels",
    "annotations", "deploymentStrategy", "storageUris", "storageContainerName", "workerSpec",
    "model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "pmml", "lightgbm",
    "paddle", "huggingface",
})
CONTAINER = "kserve-container"
MODELS = "/mnt/models"
PROVISION_VOLUME = "kserve-provision-location"
MODELCAR = "modelcar"
CONTAINER_MERGE_KEYS = {"env": "name", "ports": "containerPort", "volumeMounts": "mountPath",
                        "volumeDevices": "devicePath", "resizePolicy": "resourceName"}
POD_MERGE_KEYS = {"volumes": "name", "imagePullSecrets": "name", "containers": "name"}
RUNTIME_POD_FIELDS = ("nodeSelector", "affinity", "tolerations", "volumes", "imagePullSecrets", "schedulerName",
                      "resourceClaims")
MODEL_FIELDS = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri", "storage"}


def strategic_merge(base: Any, patch: Any, merge_keys: dict[str, str]) -> Any:
    """Kubernetes' strategic merge patch for the fields we use (no $patch directives)."""
    if not (isinstance(base, dict) and isinstance(patch, dict)):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif key in merge_keys and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _merge_list(out[key], value, merge_keys[key])
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = strategic_merge(out[key], value, {})
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_list(base: list[dict], patch: list[dict], key: str) -> list[dict]:
    out = [copy.deepcopy(item) for item in base]
    for item in patch:
        at = next((i for i, existing in enumerate(out) if existing.get(key) == item.get(key)), None)
        if at is None:
            out.append(copy.deepcopy(item))
        elif key == "name" and ("value" in item or "valueFrom" in item):  # an env entry: one source wins
            out[at] = copy.deepcopy(item)
        else:
            out[at] = strategic_merge(out[at], item, {})
    return out


def merge_runtime_container(runtime: dict, isvc: dict) -> dict:
    """MergeRuntimeContainers: strategic merge, then the runtime's args followed by the InferenceService's."""
    merged = strategic_merge(runtime, isvc, CONTAINER_MERGE_KEYS)
    merged["args"] = [*runtime.get("args", []), *isvc.get("args", [])]
    if not merged["args"]:
        del merged["args"]
    merged.setdefault("name", runtime["name"])
    return merged


def replace_placeholders(container: dict, meta: dict) -> dict:
    """ReplacePlaceholders for the forms a runtime uses: `{{.Name}}`, `{{.Namespace}}`,
    `{{.Labels.<key>}}` and `{{.Annotations.<key>}}`; any other template action is refused."""
    text = json.dumps(container)

    def value(match: re.Match) -> str:
        field, _, key = match.group(1).partition(".")
        if field in ("Name", "Namespace") and not key:
            return meta[field.lower()]
        if field in ("Labels", "Annotations") and key:
            return meta.get(field.lower(), {}).get(key, "<no value>")
        raise AssertionError(f"template action {match.group(0)} is not modelled")

    rendered = re.sub(r"\{\{\s*\.([\w.]+)\s*\}\}", value, text)
    assert "{{" not in rendered, f"unrendered template in {rendered}"
    return json.loads(rendered)


def runtime_for(docs, isvc: dict) -> dict:
    name = isvc["spec"]["predictor"]["model"]["runtime"]
    namespace = isvc["metadata"]["namespace"]
    found = [d for d in docs if d["kind"] == "ServingRuntime" and d["metadata"]["name"] == name
             and d["metadata"].get("namespace") == namespace]
    assert len(found) == 1, f"ServingRuntime {namespace}/{name}: {len(found)} found (no ClusterServingRuntime here)"
    return found[0]


def check_runtime_supports(runtime: dict, model: dict) -> None:
    """reconcileModel's checks: the runtime is enabled, speaks the protocol and serves the model format."""
    spec = runtime["spec"]
    assert not spec.get("disabled"), "the runtime is disabled"
    if "protocolVersion" in model:
        assert model["protocolVersion"] in spec.get("protocolVersions", ["v1"]), "protocol not supported"
    wanted = model["modelFormat"]
    assert any(f["name"] == wanted["name"] and ("version" not in wanted or f.get("version") in (None,
                                                                                               wanted["version"]))
               for f in spec.get("supportedModelFormats", [])), f"runtime does not serve {wanted}"


def predictor_pod_spec(docs, isvc: dict) -> dict:
    """The pod spec KServe hands to Knative for a predictor that uses `predictor.model`."""
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    runtime = runtime_for(docs, isvc)
    check_runtime_supports(runtime, model)
    [runtime_container] = [c for c in runtime["spec"]["containers"] if c["name"] == CONTAINER]
    assert len(runtime["spec"]["containers"]) == 1, "runtime sidecars are not modelled"
    model_container = {k: v for k, v in model.items() if k not in MODEL_FIELDS}
    container = replace_placeholders(merge_runtime_container(runtime_container, model_container), isvc["metadata"])
    runtime_pod = {k: runtime["spec"][k] for k in RUNTIME_POD_FIELDS if k in runtime["spec"]}
    own_pod = {k: v for k, v in predictor.items() if k not in KSERVE_COMPONENT_FIELDS}
    assert "containers" not in own_pod, "predictor.model with predictor.containers is not modelled"
    pod = strategic_merge(runtime_pod, own_pod, POD_MERGE_KEYS)
    pod["containers"] = [with_isvc_name(container, isvc)]
    return pod


def with_isvc_name(container: dict, isvc: dict) -> dict:
    env = [e for e in container.get("env", []) if e["name"] != "INFERENCE_SERVICE_NAME"]
    return {**container, "env": [*env, {"name": "INFERENCE_SERVICE_NAME", "value": isvc["metadata"]["name"]}]}


def storage_uri(isvc: dict, pod_spec: dict) -> str | None:
    """predictor.model.storageUri, or a custom kserve-container's STORAGE_URI (predictor_custom.go)."""
    model = isvc["spec"]["predictor"].get("model")
    if model is not None:
        return model.get("storageUri")
    container = next(c for c in pod_spec["containers"] if c["name"] == CONTAINER)
    return next((e["value"] for e in container.get("env", []) if e["name"] == "STORAGE_URI"), None)


UID_MODELCAR = 1010
"""`uidModelcar` of KServe's default storageInitializer config (config/configmap/inferenceservice.yaml):
ConfigureModelcarToContainer runs kserve-container and the sidecar as this uid (pkg/utils/storage.go)."""
MODELCAR_INIT_CHECK = ("echo 'Pre-fetching modelcar {image}: ' && [ -d /models ] && [ \"$$(ls -A /models)\" ] && "
                       "echo 'OK ... Prefetched and valid (/models exists)' || (echo 'NOK ... Prefetched but "
                       "modelcar is invalid (/models does not exist or is empty)' && exit 1)")
"""CreateModelcarInitContainer's args (pkg/utils/storage.go): the image's /models must not be empty."""


def with_storage(pod_spec: dict, uri: str | None, modelcar_enabled: bool = True,
                 uid_modelcar: int | None = UID_MODELCAR) -> dict:
    """The pod as KServe's pod webhook leaves it for the model at `uri` (None: unchanged)."""
    if uri is None:
        return pod_spec
    pod = copy.deepcopy(pod_spec)
    volumes = pod.setdefault("volumes", [])
    if not any(v["name"] == PROVISION_VOLUME for v in volumes):
        volumes.append({"name": PROVISION_VOLUME, "emptyDir": {}})
    container = next(c for c in pod["containers"] if c["name"] == CONTAINER)
    mounts = container.setdefault("volumeMounts", [])
    if uri.startswith("oci://"):
        assert modelcar_enabled, "oci:// needs storageInitializer enableModelcar (or OCI model support) on"
        container["env"] = [*[e for e in container.get("env", []) if e["name"] != "MODEL_INIT_MODE"],
                            {"name": "MODEL_INIT_MODE", "value": "async"}]
        mounts.append({"name": PROVISION_VOLUME, "mountPath": "/mnt", "readOnly": False})
        image = uri.removeprefix("oci://")
        uid = {"securityContext": {"runAsUser": uid_modelcar}} if uid_modelcar is not None else {}
        if uid_modelcar is not None:
            container.setdefault("securityContext", {})["runAsUser"] = uid_modelcar
        pod["containers"].append({
            "name": MODELCAR, "image": image,
            "args": ["sh", "-c", f"ln -sf /proc/$$$$/root/models {MODELS} && sleep infinity"],
            "volumeMounts": [{"name": PROVISION_VOLUME, "mountPath": "/mnt", "readOnly": False}],
            "resources": {"limits": {"cpu": "10m", "memory": "15Mi"}, "requests": {"cpu": "10m", "memory": "15Mi"}},
            "terminationMessagePolicy": "FallbackToLogsOnError", **uid})
        pod.setdefault("initContainers", []).append({"name": f"{MODELCAR}-init", "image": image,
                                                     "args": ["sh", "-c", MODELCAR_INIT_CHECK.format(image=image)]})
        pod["shareProcessNamespace"] = True
    else:
        mounts.append({"name": PROVISION_VOLUME, "mountPath": MODELS, "readOnly": True})
        pod.setdefault("initContainers", []).append({
            "name": "storage-initializer", "args": [uri, MODELS],
            "volumeMounts": [{"name": PROVISION_VOLUME, "mountPath": MODELS}]})
    return pod


def component_pod_spec(docs, isvc: dict, component: str) -> dict:
    """What KServe hands to Knative for `component`: a runtime merge for predictor.model, else the
    component's own pod fields."""
    spec = isvc["spec"][component]
    if component == "predictor" and "model" in spec:
        return predictor_pod_spec(docs, isvc)
    return {k: v for k, v in spec.items() if k not in KSERVE_COMPONENT_FIELDS}
