"""What Knative Serving's admission webhook accepts in the pod spec of a Knative Service, with
every `kubernetes.podspec-*` feature flag at its default, as data plus a checker.

KServe (Knative deployment mode) copies each InferenceService component's pod fields into the
Knative Service it creates (kserve/kserve pkg/controller/v1beta1/inferenceservice/reconcilers/
knative/ksvc_reconciler.go @0217bdabaaa250485b336805da1aed04960dc758, createKnativeService:
`PodSpec: *podSpec`), so anything Knative refuses there keeps the InferenceService from ever
becoming Ready. A CRD schema cannot see this: the InferenceService CRD accepts the full PodSpec.

Sources (knative/serving unless noted):
- pkg/apis/serving/fieldmask.go @ec4128ad53a8400720899dc333a286397bdb595d: the *Mask functions,
  one per struct, copy the fields Knative allows; apis.CheckDisallowedFields refuses the rest.
  The same field lists, for a later API (ProbeHandler with grpc, SeccompProfile), are in
  hack/schemapatch-config.yaml @05e349fa979b46a5a264ec70a7e8239eb8a3745e.
- pkg/apis/config/features.go @015a69d7f0308c69f13419c3805acbaffac2f202, defaultFeaturesConfig:
  which feature-gated fields are allowed by default (only emptyDir volumes and multi-container).
- pkg/apis/serving/k8s_validation.go @01a70b23a069ab215521f10fa1b81569c0cb0bba: ports, reserved
  names, ports and paths, volume mounts, probes.
- startupProbe: allowed since Knative Serving 1.15 (knative/serving pull 15309, "Add startup
  probe support to Knative Service"); refused by older releases.
- reserved ports (k8s_validation.go reservedPorts): knative/serving pkg/networking/constants.go
  @d91b5d6cdd290075a0a911ee97a5238ea19fdecb (8012, 8013, 8022, 9090, 9091) and knative/pkg
  profiling/server.go ProfilingPort 8008 (@6b4859f3cfe67248b39669d375e899bed46c3e09 has it as
  a string; refusing it is the conservative reading).

A predictor that names a ServingRuntime (`predictor.model`) is checked as KServe merges it with
the runtime (tests/kserve/kserve_merge.py).

The table lists JSON field names per Kubernetes struct: a string names the struct of an object
field, a one-element list the struct of each list item, None a value that is not recursed
(scalars, and structs Knative copies whole).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from tests.kserve.kserve_merge import component_pod_spec

LEAF = None

ALLOWED: dict[str, dict[str, str | list[str] | None]] = {
    # PodSpecMask. automountServiceAccountToken: only `false` (checked below).
    "PodSpec": {
        "serviceAccountName": LEAF, "containers": ["Container"], "volumes": ["Volume"],
        "imagePullSecrets": ["LocalObjectReference"], "enableServiceLinks": LEAF,
        "automountServiceAccountToken": LEAF,
    },
    # ContainerMask (+ startupProbe, Knative >= 1.15).
    "Container": {
        "name": LEAF, "args": LEAF, "command": LEAF, "env": ["EnvVar"], "workingDir": LEAF,
        "envFrom": ["EnvFromSource"], "image": LEAF, "imagePullPolicy": LEAF,
        "livenessProbe": "Probe", "readinessProbe": "Probe", "startupProbe": "Probe",
        "ports": ["ContainerPort"], "resources": "ResourceRequirements",
        "securityContext": "SecurityContext", "terminationMessagePath": LEAF,
        "terminationMessagePolicy": LEAF, "volumeMounts": ["VolumeMount"],
    },
    # SecurityContextMask.
    "SecurityContext": {
        "allowPrivilegeEscalation": LEAF, "capabilities": "Capabilities", "readOnlyRootFilesystem": LEAF,
        "runAsGroup": LEAF, "runAsNonRoot": LEAF, "runAsUser": LEAF, "seccompProfile": "SeccompProfile",
    },
    # CapabilitiesMask: `add` only with kubernetes.containerspec-addcapabilities.
    "Capabilities": {"drop": LEAF},
    "SeccompProfile": {"type": LEAF, "localhostProfile": LEAF},
    # ResourceRequirementsMask: any resource name under limits/requests.
    "ResourceRequirements": {"limits": LEAF, "requests": LEAF},
    # ContainerPortMask.
    "ContainerPort": {"containerPort": LEAF, "name": LEAF, "protocol": LEAF},
    # EnvVarMask, EnvVarSourceMask (fieldRef/resourceFieldRef only with kubernetes.podspec-fieldref).
    "EnvVar": {"name": LEAF, "value": LEAF, "valueFrom": "EnvVarSource"},
    "EnvVarSource": {"configMapKeyRef": "KeySelector", "secretKeyRef": "KeySelector"},
    "KeySelector": {"name": LEAF, "key": LEAF, "optional": LEAF},
    "EnvFromSource": {"prefix": LEAF, "configMapRef": "EnvSource", "secretRef": "EnvSource"},
    "EnvSource": {"name": LEAF, "optional": LEAF},
    "LocalObjectReference": {"name": LEAF},
    # VolumeMountMask.
    "VolumeMount": {"name": LEAF, "readOnly": LEAF, "mountPath": LEAF, "subPath": LEAF},
    # VolumeMask + VolumeSourceMask: emptyDir is on by default (kubernetes.podspec-volumes-emptydir).
    "Volume": {"name": LEAF, "secret": LEAF, "configMap": LEAF, "projected": LEAF, "emptyDir": "EmptyDir"},
    "EmptyDir": {"medium": LEAF, "sizeLimit": LEAF},
    # ProbeMask + HandlerMask (the handler is inlined in the Probe's JSON).
    "Probe": {
        "exec": "ExecAction", "httpGet": "HTTPGetAction", "tcpSocket": "TCPSocketAction", "grpc": "GRPCAction",
        "initialDelaySeconds": LEAF, "timeoutSeconds": LEAF, "periodSeconds": LEAF,
        "successThreshold": LEAF, "failureThreshold": LEAF,
    },
    "ExecAction": {"command": LEAF},
    "HTTPGetAction": {"host": LEAF, "path": LEAF, "scheme": LEAF, "httpHeaders": LEAF, "port": LEAF},
    "TCPSocketAction": {"host": LEAF, "port": LEAF},
    "GRPCAction": {"port": LEAF, "service": LEAF},
}

# Fields that exist on the Kubernetes struct but need a feature flag that is Disabled by default
# (features.go defaultFeaturesConfig), so the message can say which flag an operator would need.
FEATURE_GATED: dict[tuple[str, str], str] = {
    ("PodSpec", "securityContext"): "kubernetes.podspec-securitycontext",
    ("PodSpec", "affinity"): "kubernetes.podspec-affinity",
    ("PodSpec", "topologySpreadConstraints"): "kubernetes.podspec-topologyspreadconstraints",
    ("PodSpec", "hostAliases"): "kubernetes.podspec-hostaliases",
    ("PodSpec", "nodeSelector"): "kubernetes.podspec-nodeselector",
    ("PodSpec", "runtimeClassName"): "kubernetes.podspec-runtimeclassname",
    ("PodSpec", "tolerations"): "kubernetes.podspec-tolerations",
    ("PodSpec", "priorityClassName"): "kubernetes.podspec-priorityclassname",
    ("PodSpec", "schedulerName"): "kubernetes.podspec-schedulername",
    ("PodSpec", "initContainers"): "kubernetes.podspec-init-containers",
    ("PodSpec", "dnsPolicy"): "kubernetes.podspec-dnspolicy",
    ("PodSpec", "dnsConfig"): "kubernetes.podspec-dnsconfig",
    ("PodSpec", "shareProcessNamespace"): "kubernetes.podspec-shareprocessnamespace",
    ("PodSpec", "hostIPC"): "kubernetes.podspec-hostipc",
    ("PodSpec", "hostPID"): "kubernetes.podspec-hostpid",
    ("PodSpec", "hostNetwork"): "kubernetes.podspec-hostnetwork",
    ("EnvVarSource", "fieldRef"): "kubernetes.podspec-fieldref",
    ("EnvVarSource", "resourceFieldRef"): "kubernetes.podspec-fieldref",
    ("Capabilities", "add"): "kubernetes.containerspec-addcapabilities",
    ("Volume", "persistentVolumeClaim"): "kubernetes.podspec-persistent-volume-claim",
    ("Volume", "hostPath"): "kubernetes.podspec-volumes-hostpath",
    ("Volume", "csi"): "kubernetes.podspec-volumes-csi",
}

# k8s_validation.go
RESERVED_PORTS = frozenset({8012, 8013, 8022, 9090, 9091, 8008})
VALID_PORT_NAMES = frozenset({"", "h2c", "http1"})
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
RESERVED_CONTAINER_NAMES = frozenset({"queue-proxy"})
RESERVED_MOUNT_PATHS = frozenset({"/", "/dev", "/dev/log"})
PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
MAX_ID = 2**31 - 1

COMPONENTS = ("predictor", "transformer", "explainer")


def knative_pod_specs(docs) -> Iterator[tuple[str, dict]]:
    """(`<InferenceService>/<component>`, pod spec) for every component KServe hands to Knative."""
    for doc in docs:
        if doc["kind"] != "InferenceService":
            continue
        for component in COMPONENTS:
            if component in doc["spec"]:
                yield f"{doc['metadata']['name']}/{component}", component_pod_spec(docs, doc, component)


def violations(pod_spec: dict) -> list[str]:
    """Every reason Knative's webhook would refuse this pod spec (empty when it admits it)."""
    errors = list(_disallowed_fields(pod_spec, "PodSpec", "spec"))
    errors += _pod_rules(pod_spec)
    return errors


def _disallowed_fields(node, struct: str, path: str) -> Iterator[str]:
    if not isinstance(node, dict):
        yield f"{path}: expected an object ({struct})"
        return
    allowed = ALLOWED[struct]
    for key, value in node.items():
        where = f"{path}.{key}"
        if key not in allowed:
            flag = FEATURE_GATED.get((struct, key))
            yield (f"{where}: needs feature flag {flag} (Disabled by default)" if flag
                   else f"{where}: not a field Knative accepts in {struct}")
            continue
        child = allowed[key]
        if isinstance(child, list):
            for i, item in enumerate(value or []):
                yield from _disallowed_fields(item, child[0], f"{where}[{i}]")
        elif child is not None:
            yield from _disallowed_fields(value, child, where)


def _pod_rules(spec: dict) -> list[str]:
    errors: list[str] = []
    containers = spec.get("containers") or []
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    if not containers:
        errors.append("spec.containers: at least one container is required")
    if spec.get("automountServiceAccountToken") not in (None, False):
        errors.append("spec.automountServiceAccountToken: only false is allowed")
    names = [c.get("name") for c in containers]
    if len(set(names)) != len(names):
        errors.append(f"spec.containers: duplicate container names {names}")
    ports = [p for c in containers for p in c.get("ports") or []]
    if len(ports) > 1:
        errors.append(f"spec.containers[*].ports: more than one container port is set ({len(ports)})")
    if len(containers) > 1 and not ports:
        errors.append("spec.containers[*].ports: a port is required with more than one container")
    mounted = {m.get("name") for c in containers for m in c.get("volumeMounts") or []}
    for name in volumes:
        if name not in mounted:
            errors.append(f"spec.volumes[{name}]: volume is not mounted")
    for volume in volumes.values():
        sources = [k for k in volume if k != "name"]
        if len(sources) != 1:
            errors.append(f"spec.volumes[{volume.get('name')}]: exactly one volume source, found {sources}")
    for i, container in enumerate(containers):
        errors += _container_rules(container, f"spec.containers[{i}]", volumes)
    return errors


def _container_rules(c: dict, where: str, volumes: dict) -> list[str]:
    errors: list[str] = []
    if not c.get("image"):
        errors.append(f"{where}.image: required")
    if c.get("name") in RESERVED_CONTAINER_NAMES:
        errors.append(f"{where}.name: {c['name']!r} is reserved")
    for env in c.get("env") or []:
        if env.get("name") in RESERVED_ENV:
            errors.append(f"{where}.env: {env['name']!r} is a reserved environment variable")
    ports = c.get("ports") or []
    for port in ports:
        if port.get("name", "") not in VALID_PORT_NAMES:
            errors.append(f"{where}.ports: name {port.get('name')!r} is not allowed (empty, h2c or http1)")
        if port.get("protocol", "TCP") != "TCP":
            errors.append(f"{where}.ports: protocol {port.get('protocol')!r} is not allowed (TCP)")
        number = port.get("containerPort", 0)
        if number in RESERVED_PORTS:
            errors.append(f"{where}.ports: {number} is a reserved port")
        if not 0 <= number <= 65535:
            errors.append(f"{where}.ports: {number} is out of range")
    port_name = ports[0].get("name", "") if ports else "http"
    # Not an admission rule but what the revision's Deployment gets: Knative points a user
    # liveness probe at the serving port (knative/serving pkg/reconciler/revision/resources/
    # deploy.go, rewriteUserLivenessProbe; a custom port survives only with the
    # multi-container-probing flag), so an HTTP check of another port probes the wrong server.
    live = (c.get("livenessProbe") or {}).get("httpGet") or {}
    if ports and isinstance(live.get("port"), int) and live["port"] != ports[0].get("containerPort"):
        errors.append(f"{where}.livenessProbe.httpGet.port: {live['port']} is not the serving port "
                      f"{ports[0].get('containerPort')}; Knative would probe the serving port instead")
    for probe_field in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe_field in c:
            errors += _probe_rules(c[probe_field], f"{where}.{probe_field}", port_name,
                                   readiness=probe_field == "readinessProbe")
    security = c.get("securityContext") or {}
    for field in ("runAsUser", "runAsGroup"):
        if field in security and not 0 <= security[field] <= MAX_ID:
            errors.append(f"{where}.securityContext.{field}: out of range")
    seen_paths = set()
    for mount in c.get("volumeMounts") or []:
        path = mount.get("mountPath", "")
        volume = volumes.get(mount.get("name"))
        if volume is None:
            errors.append(f"{where}.volumeMounts[{mount.get('name')}]: no volume of that name")
        elif "emptyDir" not in volume and not mount.get("readOnly"):
            errors.append(f"{where}.volumeMounts[{mount.get('name')}]: must be readOnly for this volume type")
        normalized = "/" + "/".join(p for p in path.split("/") if p)
        if not path.startswith("/"):
            errors.append(f"{where}.volumeMounts: mountPath {path!r} must be absolute")
        elif normalized in RESERVED_MOUNT_PATHS:
            errors.append(f"{where}.volumeMounts: mountPath {path!r} is reserved")
        elif normalized in seen_paths:
            errors.append(f"{where}.volumeMounts: mountPath {path!r} must be unique")
        seen_paths.add(normalized)
    return errors


def _probe_rules(probe: dict, where: str, port_name: str, readiness: bool) -> list[str]:
    errors: list[str] = []
    handlers = [h for h in PROBE_HANDLERS if h in probe]
    if len(handlers) != 1:
        errors.append(f"{where}: exactly one of {PROBE_HANDLERS}, found {handlers}")
    for handler in ("httpGet", "tcpSocket"):
        port = (probe.get(handler) or {}).get("port")
        if isinstance(port, str) and port != port_name:
            errors.append(f"{where}.{handler}.port: {port!r} must match the container port name")
    if readiness:
        if probe.get("periodSeconds", 1) < 0 or probe.get("initialDelaySeconds", 0) < 0:
            errors.append(f"{where}: periodSeconds and initialDelaySeconds must be >= 0")
        if probe.get("periodSeconds") == 0 and ("failureThreshold" in probe or "timeoutSeconds" in probe):
            errors.append(f"{where}: failureThreshold and timeoutSeconds are disallowed when periodSeconds is 0")
    return errors


# Knative's autoscaling annotations, as its webhook validates them on the revision template
# (knative/serving pkg/apis/autoscaling/annotation_validation.go @98e5ef90aa: validateFloats,
# validateScaleDownDelay, validateLastPodRetention, validateInitialScale; WindowMax = 1h in
# register.go), with config-autoscaler at its defaults (allow-zero-initial-scale: false).
# KServe copies a component's annotations onto the revision template.
WINDOW_MAX_S = 3600


def go_duration_s(text: str) -> float | None:
    """Go's time.ParseDuration for the units annotations use (h, m, s, ms), or None if it would fail."""
    if text in ("0", "-0"):
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", text.lstrip("-"))
    if not parts or "".join(n + u for n, u in parts) != text.lstrip("-"):
        return None
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u] for n, u in parts)
    return -seconds if text.startswith("-") else seconds


def annotation_violations(annotations: dict[str, str]) -> list[str]:
    """Every reason Knative's webhook would refuse these autoscaling annotations."""
    errors = []
    prefix = "autoscaling.knative.dev/"
    if (v := annotations.get(prefix + "target-burst-capacity")) is not None:
        try:
            if float(v) < 0 and float(v) != -1:
                errors.append(f"target-burst-capacity {v}: must be -1 or at least 0")
        except ValueError:
            errors.append(f"target-burst-capacity {v}: not a number")
    for name in ("scale-down-delay", "scale-to-zero-pod-retention-period"):
        if (v := annotations.get(prefix + name)) is not None:
            d = go_duration_s(v)
            if d is None or not 0 <= d <= WINDOW_MAX_S:
                errors.append(f"{name} {v}: must be a duration from 0s to 1h")
            elif name == "scale-down-delay" and d != round(d):
                errors.append(f"{name} {v}: at most second precision")
    if (v := annotations.get(prefix + "initial-scale")) is not None:
        if not re.fullmatch(r"[+-]?\d+", v) or int(v) < 0:
            errors.append(f"initial-scale {v}: must be an integer of at least 0")
        elif int(v) == 0:
            errors.append("initial-scale 0: not allowed by the cluster (allow-zero-initial-scale is false by default)")
    return errors
