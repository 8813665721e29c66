"""Pod rehearsal: start the containers of rendered manifests on this machine the way a cluster would.

Each container runs its image's ENTRYPOINT mapped to this machine (ours: the Dockerfile's ENTRYPOINT,
ENV, USER and WORKDIR as written, with this virtualenv and checkout mounted where the image has them;
Redis: the local redis-server behind the official image's docker-entrypoint rule), with the manifest's
command, args and env as the kubelet builds them, plus what KServe adds, under bubblewrap: the
manifest's non-root uid, a read-only root filesystem, all capabilities dropped, and only the pod's
declared volumes writable (each emptyDir a fresh directory). Pods share this machine's loopback, so
port flags and declared container ports move to free ports, and Service addresses in env and args
point at the rehearsed pods.

The rules encoded here, and their sources:
- `$(VAR)` expansion, `$$` escaping, undefined references left as they are: kubernetes/kubernetes
  third_party/forked/golang/expansion/expand.go. Env values see the env vars defined before them;
  command and args see all of them (pkg/kubelet/container/helpers.go, ExpandContainerCommandAndArgs).
  A container with args and no command keeps the image's ENTRYPOINT and drops its CMD.
- A custom transformer gets `--model_name <isvc>`, `--predictor_host <isvc>-predictor.<namespace>`,
  `--http_port 8080` and `--workers <containerConcurrency>`, each only when no arg already starts with
  the flag: kserve/kserve pkg/apis/serving/v1beta1/transformer_custom.go (GetContainer) and
  pkg/utils/utils.go (IncludesArg). A custom predictor's container is used as written
  (pkg/apis/serving/v1beta1/predictor_custom.go, GetContainer).
- `STORAGE_URI` on the predictor's kserve-container makes KServe's storage initializer download the
  model into /mnt/models, mounted read-only unless the storage-readonly annotation says otherwise
  (pkg/webhook/admission/pod/storage_initializer_injector.go, GetStorageInitializerReadOnlyFlag).
  A predictor that names a ServingRuntime (`predictor.model`) is the runtime's container merged with
  the InferenceService's, and its storage is injected the same way, an `oci://` model as a modelcar
  whose /models the kserve-container reaches through a symlink at /mnt/models (tests/kserve/
  kserve_merge.py, with sources). The modelcar sidecar itself is not rehearsed: its model directory
  is mounted read-only where the symlink points.
  hf:// URIs go through huggingface_hub `snapshot_download(repo_id, revision, local_dir=...)`
  (python/storage/kserve_storage/kserve_storage.py, Storage._download_hf), which also writes
  `.cache/huggingface/download/<file>.metadata` holding the commit, the etag and a timestamp
  (huggingface_hub/_local_folder.py).

Not enforced: CPU and memory limits and emptyDir size limits (the CPU limit is in the pod's cgroup
files; the tests compare measured memory and volume use with the others), seccomp. Not rehearsed:
the mesh, Knative's queue-proxy and activator (a component's Service answers on port 80 and
forwards to the container's port). With bubblewrap's user namespace the sandbox uid is this
machine's uid, so files this machine's user owns look owned by the pod's uid (reads the real image
would refuse can pass here).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness.processes import REPO, ServerProcess, free_port, wait_until
from harness.sandbox import Image, Sandbox, built_image
from tests.kserve.kserve_merge import (
    CONTAINER,
    MODELCAR,
    MODELS,
    PROVISION_VOLUME,
    component_pod_spec,
    storage_uri,
    with_storage,
)

MODELS_MOUNT = MODELS
MODELCAR_ROOT = "/rehearsal/modelcar"
"""Where the rehearsal mounts a modelcar's image (the sidecar's /proc/<pid>/root in a cluster)."""
KSERVE_HTTP_PORT = "8080"  # constants.InferenceServiceDefaultHttpPort
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WRITE_ERRORS = ("Read-only file system", "Permission denied", "[Errno 30]", "[Errno 13]")


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory/storage quantity ("256Mi", "2Gi", "500M", "1000") in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    number, unit = re.fullmatch(r"([\d.]+)([A-Za-z]*)", str(quantity)).groups()
    return int(float(number) * units.get(unit, 1))


def cpu_quantity(quantity: str) -> float:
    """A Kubernetes CPU quantity ("2", "1.5", "500m") in CPUs."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion: `$$` is a literal `$`, undefined references stay as written."""
    return re.sub(r"\$(?:\$|\(([^)]*)\))",
                  lambda m: "$" if m.group(1) is None else env.get(m.group(1), m.group(0)), text)


def kserve_transformer_args(args: list[str], isvc: dict, component: dict) -> list[str]:
    """The args KServe gives a custom transformer's container (transformer_custom.go, GetContainer)."""
    meta = isvc["metadata"]
    injected = [("--model_name", meta["name"]), ("--predictor_host", f"{meta['name']}-predictor.{meta['namespace']}"),
                ("--http_port", KSERVE_HTTP_PORT)]
    if component.get("containerConcurrency") is not None:
        injected.append(("--workers", str(component["containerConcurrency"])))
    out = list(args)
    for flag, value in injected:
        if not any(arg.startswith(flag) for arg in out):
            out += [flag, value]
    return out


def fake_hf_download(model: Path, dest: Path, timestamp: float, commit: str = "3d4ee5a1b2c3") -> Path:
    """`dest` as KServe's storage initializer leaves it for an hf:// URI: the repo's files (with the
    model card and .gitattributes a Hub repo has) plus huggingface_hub's download metadata."""
    for src in model.rglob("*"):
        if src.is_file():
            (dest / src.relative_to(model)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / src.relative_to(model))
    (dest / "README.md").write_text("---\nlicense: apache-2.0\n---\n# model card\n")
    (dest / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    meta = dest / ".cache" / "huggingface"
    (meta / "download").mkdir(parents=True)
    (meta / ".gitignore").write_text("*")
    for path in dest.rglob("*"):
        if path.is_file() and meta not in path.parents:
            name = path.relative_to(dest)
            (meta / "download" / f"{name}.metadata").write_text(f"{commit}\n{name}-etag\n{timestamp}\n")
    return dest


APP_MOUNT = "/rehearsal/app"


def dockerfile_image(dockerfile: Path) -> Image:
    """Our images, from the Dockerfile's final stage: ENTRYPOINT, CMD, ENV, USER and WORKDIR as written.

    The image's virtualenv (its VIRTUAL_ENV) is this machine's, mounted where the image has it; the
    package the image installs into it is this checkout, mounted at APP_MOUNT and put on PYTHONPATH.
    """
    text = dockerfile.read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM "):]
    entrypoint: list[str] = []
    cmd: list[str] = []
    env = {"PATH": BASE_PATH}
    user, workdir = None, "/"
    for line in final.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "USER":
            user = int(rest.split(":")[0])
        elif word == "WORKDIR":
            workdir = rest.strip()
        elif word == "ENV":
            for kv in shlex.split(rest):
                name, _, value = kv.partition("=")
                env[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
    assert entrypoint and "VIRTUAL_ENV" in env, f"{dockerfile}: no ENTRYPOINT or VIRTUAL_ENV in the final stage"
    env["PYTHONPATH"] = APP_MOUNT
    files = {env["VIRTUAL_ENV"]: Path(sys.prefix).resolve(), APP_MOUNT: REPO}
    return Image(lambda args: [*entrypoint, *args], cmd, workdir, env, user, files=files)


REDIS_PORT = 6379


def redis_image() -> Image:
    """The official redis image: docker-entrypoint.sh puts `redis-server` before args that start with
    `-` or end in `.conf`; WORKDIR /data; runs as root unless the pod says otherwise. Its binaries
    listen on the rehearsal's port for 6379."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    assert server and cli, "redis-server and redis-cli are needed (apt-get install -y redis-server)"

    def entrypoint(args: list[str]) -> list[str]:
        return ["redis-server", *args] if args and (args[0].startswith("-") or args[0].endswith(".conf")) else args

    def tools(ports: Mapping[int, int]) -> dict[str, str]:
        port = ports[REDIS_PORT]
        return {"redis-server": f'#!/bin/sh\nexec {server} "$@" --port {port} --bind 127.0.0.1\n',
                "redis-cli": f'#!/bin/sh\nexec {cli} -p {port} "$@"\n'}

    return Image(entrypoint, ["redis-server"], "/data", {"PATH": f"/rehearsal/bin:{BASE_PATH}"}, None, tools)


def image_for(reference: str) -> Image:
    """The stand-in for an image that is not built: our Dockerfile's settings on this machine's software."""
    repository = reference.rsplit("/", 1)[-1].split(":")[0].split("@")[0]
    if repository.startswith("sentiment-"):
        return dockerfile_image(REPO / f"Dockerfile.{repository.removeprefix('sentiment-')}")
    if repository == "redis":
        return redis_image()
    raise AssertionError(f"no local stand-in for image {reference}")


def passwd_group(root: Path, uid: int) -> int:
    """The primary group of `uid` in the root filesystem's /etc/passwd, or 0 when it has no entry."""
    try:
        for line in (root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 3 and fields[2] == str(uid):
                return int(fields[3])
    except OSError:
        pass
    return 0


def rewrite_ports(args: list[str], ports: dict[int, int]) -> list[str]:
    """Move every `--*port N` / `--*port=N` flag to the free port standing in for N (added to `ports`)."""
    def moved(value: str) -> str:
        if int(value) not in ports:
            ports[int(value)] = free_port()
        return str(ports[int(value)])

    out: list[str] = []
    flag = re.compile(r"^(--[\w-]*port)(?:=(\d+))?$")
    i = 0
    while i < len(args):
        m = flag.match(args[i])
        if m and m.group(2):
            out.append(f"{m.group(1)}={moved(m.group(2))}")
        elif m and i + 1 < len(args) and args[i + 1].isdigit():
            out += [args[i], moved(args[i + 1])]
            i += 1
        else:
            out.append(args[i])
        i += 1
    return out


@dataclass
class Pod:
    """One rehearsed pod (one container), started by `Rehearsal`."""

    name: str
    container: dict
    argv: list[str]
    env: dict[str, str]
    ports: dict[int, int]
    """container port -> port on this machine."""
    volumes: dict[str, Path]
    """writable mount path -> its directory on this machine."""
    sandbox: Sandbox
    process: ServerProcess
    secrets: dict[str, str] = field(default_factory=dict)
    """env vars set from a Secret, and their values."""
    size_limits: dict[str, str] = field(default_factory=dict)
    """writable mount path -> its emptyDir's sizeLimit."""

    def port(self, port: int | str) -> int:
        if isinstance(port, str):
            port = next(p["containerPort"] for p in self.container.get("ports", []) if p.get("name") == port)
        return self.ports[port]

    def url(self, port: int | str = 8080) -> str:
        return f"http://127.0.0.1:{self.port(port)}"

    def probe(self, kind: str) -> bool:
        """Run the container's `kind` probe (readinessProbe, livenessProbe, ...) once; True if it passes."""
        probe = self.container[kind]
        if "httpGet" in probe:
            get = probe["httpGet"]
            return 200 <= httpx.get(f"{self.url(get['port'])}{get.get('path', '/')}", timeout=2).status_code < 400
        if "tcpSocket" in probe:
            with socket.create_connection(("127.0.0.1", self.port(probe["tcpSocket"]["port"])), timeout=2):
                return True
        command = self.sandbox.wrap(probe["exec"]["command"])
        return subprocess.run(command, env=self.env, capture_output=True, timeout=10,
                              pass_fds=self.sandbox.pass_fds).returncode == 0

    def wait_ready(self, timeout: float) -> Pod:
        for kind in ("startupProbe", "readinessProbe"):
            if kind in self.container:
                wait_until(lambda kind=kind: self.probe(kind), timeout, f"{self.name} {kind}", self.process.proc,
                           self.process.log_path)
        return self

    def _processes(self, file: str) -> list[bytes]:
        """`file` (cmdline, status) of each process in the pod: its process group on this machine."""
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and \
                        int(proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[2]) == self.process.proc.pid:
                    found.append(proc.joinpath(file).read_bytes())
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
        return found

    def user_namespace(self) -> tuple[int, int, int]:
        """An open descriptor of the user namespace the pod's processes run in, and the uid and gid it maps."""
        ours = os.stat("/proc/self/ns/user").st_ino
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for proc in Path("/proc").iterdir():
                try:
                    if proc.name.isdigit() and os.getpgid(int(proc.name)) == self.process.proc.pid and \
                            (proc / "ns/user").stat().st_ino != ours and self._mapped(proc):
                        self._userns_fd = os.open(proc / "ns/user", os.O_RDONLY)
                        return self._userns_fd, self.sandbox.uid, self.sandbox.gid
                except OSError:
                    continue  # gone meanwhile
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: no process in a user namespace of its own")

    def _mapped(self, proc: Path) -> bool:
        """Whether bwrap has written the namespace's uid and gid maps yet (a process joining it before
        then could not switch to the sandbox's uid)."""
        first = [(proc / name).read_text().split()[:1] for name in ("uid_map", "gid_map")]
        return first == [[str(self.sandbox.uid)], [str(self.sandbox.gid)]]

    def command_lines(self) -> list[list[str]]:
        """The argv of every process running in the pod."""
        return [cmdline.decode(errors="replace").split("\0")[:-1] for cmdline in self._processes("cmdline")]

    def peak_memory_bytes(self) -> int:
        """Sum of the pod's processes' peak resident memory (VmHWM): what a memory limit must hold."""
        peaks = (re.search(rb"^VmHWM:\s+(\d+) kB", status, re.M) for status in self._processes("status"))
        return sum(int(peak.group(1)) * 1024 for peak in peaks if peak)

    def volume_bytes(self, mount_path: str) -> int:
        return sum(p.stat().st_size for p in self.volumes[mount_path].rglob("*") if p.is_file())

    def write_errors(self) -> list[str]:
        return [line for line in self.process.log().splitlines() if any(e in line for e in WRITE_ERRORS)]


@dataclass
class Rehearsal:
    """Rehearses pods of rendered manifests `docs` in `work`; Services resolve to the rehearsed pods."""

    docs: list[dict]
    work: Path
    pods: list[Pod] = field(default_factory=list)
    addresses: dict[tuple[str, str, int], int] = field(default_factory=dict)
    """(service, namespace, service port) -> port on this machine."""
    sidecars: list[Pod] = field(default_factory=list)
    """Modelcar containers, beside the pods whose models they hold."""
    mounted: ExitStack = field(default_factory=ExitStack)
    """Built images' root filesystems in use."""

    def deployment(self, name: str) -> Pod:
        [deploy] = [d for d in self.docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
        template = deploy["spec"]["template"]
        pod = self._start(name, template["spec"], deploy["metadata"]["namespace"], lambda args: args)
        for service in self.docs:
            selector = service.get("spec", {}).get("selector") if service["kind"] == "Service" else None
            if selector and selector.items() <= template["metadata"].get("labels", {}).items():
                for port in service["spec"]["ports"]:
                    target = port.get("targetPort", port["port"])
                    self.addresses[(service["metadata"]["name"], service["metadata"]["namespace"], port["port"])] = \
                        pod.port(target)
        return pod

    def component(self, isvc_name: str, component: str, models: Path | None = None, replica: str = "") -> Pod:
        """A pod of an InferenceService component. `models` stands in for what the storage initializer downloads
        (hf://) and, when the modelcar image is not built, for the modelcar's /models (oci://)."""
        [isvc] = [d for d in self.docs if d["kind"] == "InferenceService" and d["metadata"]["name"] == isvc_name]
        spec = isvc["spec"][component]
        namespace = isvc["metadata"]["namespace"]
        hook = (lambda args: kserve_transformer_args(args, isvc, spec)) if component == "transformer" else \
            (lambda args: args)
        pod_spec = component_pod_spec(self.docs, isvc, component)
        if component == "predictor":
            pod_spec = with_storage(pod_spec, storage_uri(isvc, pod_spec))
        name = f"{isvc_name}-{component}{replica}"
        sidecar = next((c for c in pod_spec["containers"] if c["name"] == MODELCAR), None)
        modelcar = self._built(sidecar["image"]) if sidecar else None
        if modelcar is not None:  # KServe's modelcar, for real: its init check, then the sidecar
            [init] = [c for c in pod_spec["initContainers"] if c["name"] == f"{MODELCAR}-init"]
            checked = self._run_once(f"{name}-{MODELCAR}-init", init, modelcar)
            assert checked.returncode == 0, f"{name}: {MODELCAR}-init failed: {checked.stdout}{checked.stderr}"
            car = self._start(name, pod_spec, namespace, lambda args: args, container=sidecar, image=modelcar,
                              process=f"{name}-{MODELCAR}")
            self.sidecars.append(car)
            models = None
            # The containers of a pod share one user namespace, so kserve-container may follow the sidecar's
            # /proc/<pid>/root (the kernel's ptrace access rule); here each sandbox has its own, so it joins
            # the sidecar's, which maps the sidecar's uid and gid alone (_start checks they are its own).
            userns = car.user_namespace()
        else:  # `models` stands in for the modelcar's root filesystem (see _start)
            userns = None
        pod_spec = {**pod_spec, "containers": [c for c in pod_spec["containers"] if c["name"] == CONTAINER]}
        pod = self._start(name, pod_spec, namespace, hook, models, userns=userns)
        # Knative's Service for the component answers on port 80 and forwards to the container's port.
        http = pod_spec["containers"][0].get("ports", [{"containerPort": 8080}])[0]["containerPort"]
        self.addresses.setdefault((f"{isvc_name}-{component}", namespace, 80), pod.port(http))
        return pod

    def stop(self) -> None:
        for pod in reversed([*self.sidecars, *self.pods]):
            pod.process.stop()
        self.mounted.close()

    def _built(self, reference: str) -> Image | None:
        return built_image(reference, self.mounted)

    def _resolve(self, text: str) -> str:
        """Service names (`svc`, `svc.ns`, `svc.ns.svc[.cluster.local]`, `:port` or 80) -> 127.0.0.1:local port."""
        for (service, namespace, port), local in self.addresses.items():
            names = rf"{re.escape(service)}(?:\.{re.escape(namespace)}(?:\.svc(?:\.cluster\.local)?)?)?"
            explicit = rf"(?<![\w.-]){names}:{port}(?![\w-])"
            text = re.sub(explicit, f"127.0.0.1:{local}", text)
            if port == 80:
                text = re.sub(rf"(?<![\w.-]){names}(?![\w.:-])", f"127.0.0.1:{local}", text)
        return text

    def _env(self, container: dict, namespace: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for var in container.get("env", []):
            source = var.get("valueFrom")
            env[var["name"]] = expand(var.get("value", ""), env) if source is None else \
                self._value_from(source, namespace, var["name"])
        return env

    def _value_from(self, source: dict, namespace: str, name: str) -> str:
        if "secretKeyRef" in source or "configMapKeyRef" in source:
            kind, ref = ("Secret", source["secretKeyRef"]) if "secretKeyRef" in source else \
                ("ConfigMap", source["configMapKeyRef"])
            [doc] = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == ref["name"]
                     and d["metadata"].get("namespace") == namespace] or [None]
            assert doc is not None, f"env {name}: {kind} {namespace}/{ref['name']} is not in the manifests"
            if ref["key"] in doc.get("stringData", {}):
                return doc["stringData"][ref["key"]]
            data = doc.get("data", {})[ref["key"]]
            return base64.b64decode(data).decode() if kind == "Secret" else data
        if source.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            return namespace
        raise AssertionError(f"env {name}: valueFrom {source} is not rehearsed")

    def _run_once(self, name: str, container: dict, image: Image) -> subprocess.CompletedProcess:
        """An init container: its args through the image's entrypoint, to completion (kubelet expansion included)."""
        argv = image.entrypoint([expand(a, {}) for a in container.get("args", [])])
        security = container.get("securityContext", {})
        uid = security.get("runAsUser", image.user if image.user is not None else 0)
        sandbox = Sandbox(name, uid, security.get("runAsGroup", passwd_group(image.root, uid)), image.workdir, {},
                          image.root)
        return subprocess.run(sandbox.wrap(argv), env=image.env, capture_output=True, text=True, timeout=60)

    def _start(self, name: str, spec: dict, namespace: str, kserve_args: Callable[[list[str]], list[str]],
               models: Path | None = None, container: dict | None = None, image: Image | None = None,
               process: str | None = None, userns: tuple[int, int, int] | None = None) -> Pod:
        """Start one container of pod `name` (its only one, or `container`); containers of one pod share
        its volumes' directories."""
        if container is None:
            [container] = spec["containers"]
        image = image or self._built(container["image"]) or image_for(container["image"])
        security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
        if container["name"] != MODELCAR:  # KServe's own sidecar sets no securityContext but its uid
            assert security.get("readOnlyRootFilesystem"), f"{name}: readOnlyRootFilesystem is not set"
        uid = security.get("runAsUser", image.user)
        assert uid is not None and (uid != 0 or not security.get("runAsNonRoot")), \
            f"{name}: runAsNonRoot with uid {uid} would not start"
        env = self._env(container, namespace)
        ports = {p["containerPort"]: free_port() for p in container.get("ports", [])}
        # KServe edits the spec's args and the kubelet expands them. A command replaces the image's
        # ENTRYPOINT and CMD; args alone replace only CMD.
        args = [expand(a, env) for a in kserve_args(container.get("args", []))]
        if container.get("command"):
            argv = [expand(c, env) for c in container["command"]] + rewrite_ports(args, ports)
        else:
            argv = image.entrypoint(rewrite_ports(args or image.cmd, ports))
        argv = [self._resolve(a) for a in argv]
        env = {**image.env, **{k: self._resolve(v) for k, v in env.items()}}

        root = self.work / name
        mounts: dict[str, tuple[Path, bool]] = {}
        volumes: dict[str, Path] = {}
        size_limits: dict[str, str] = {}
        declared = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            volume = declared[mount["name"]]
            assert "emptyDir" in volume, f"{name}: volume {mount['name']} is not an emptyDir (not rehearsed)"
            stand_in = mount["name"] == PROVISION_VOLUME and container["name"] == CONTAINER and models is not None
            if mount["name"] == PROVISION_VOLUME and container["name"] == CONTAINER and models is None:
                assert "MODEL_INIT_MODE" in env, f"{name}: KServe provisions a model here; pass the downloaded model"
            if stand_in:
                if mount["mountPath"] == MODELS_MOUNT:  # the storage initializer's download
                    mounts[MODELS_MOUNT] = (models, True)
                    continue
                # A modelcar not built here: /mnt/models links into the sidecar's root filesystem, here `models`.
                mounts[MODELCAR_ROOT + "/models"] = (models, True)
            path = root / "volumes" / mount["name"]  # shared by the pod's containers
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)  # as the kubelet makes an emptyDir
            if stand_in:
                (path / "models").symlink_to(MODELCAR_ROOT + "/models")
            mounts[mount["mountPath"]] = (path, bool(mount.get("readOnly")))
            volumes[mount["mountPath"]] = path
            if volume["emptyDir"].get("sizeLimit"):
                size_limits[mount["mountPath"]] = volume["emptyDir"]["sizeLimit"]
        mounts.update({path: (source, True) for path, source in image.files.items()})
        # The container's own cgroup (v2, cgroup namespace) as the kubelet sets it from the CPU limit.
        cgroup = root / "cgroup" / container["name"]
        cgroup.mkdir(parents=True, exist_ok=True)
        cpu = container.get("resources", {}).get("limits", {}).get("cpu")
        (cgroup / "cpu.max").write_text(f"{round(cpu_quantity(cpu) * 100_000)} 100000\n" if cpu else "max 100000\n")
        mounts["/sys/fs/cgroup"] = (cgroup, True)
        tools = image.tools(ports)
        if tools:
            bin_dir = root / "bin" / container["name"]
            bin_dir.mkdir(parents=True)
            for tool, script in tools.items():
                (bin_dir / tool).write_text(script)
                (bin_dir / tool).chmod(0o755)
            mounts["/rehearsal/bin"] = (bin_dir, True)
        # The container runtime's group when none is set: the uid's own in the image's /etc/passwd, else 0
        # (containerd's WithUserID).
        gid = security.get("runAsGroup", passwd_group(image.root, uid))
        if userns is not None:
            # The kernel lets a process follow another's /proc/<pid>/root only with the same uid and gid
            # (ptrace access, PTRACE_MODE_READ_FSCREDS), as kserve-container reads its modelcar's model.
            shared_uid, shared_gid = userns[1], userns[2]
            assert (uid, gid) == (shared_uid, shared_gid), \
                f"{name}: runs as {uid}:{gid} but its modelcar as {shared_uid}:{shared_gid}; it could not read " \
                "the model through /proc/<pid>/root"
        sandbox = Sandbox(name, uid, gid, image.workdir, mounts, image.root, userns[0] if userns else None)
        process = ServerProcess(process or name, sandbox.wrap(argv), env, inherit_env=False,
                                pass_fds=sandbox.pass_fds).start()
        secrets = {var["name"]: env[var["name"]] for var in container.get("env", [])
                   if "secretKeyRef" in var.get("valueFrom", {})}
        pod = Pod(name, container, argv, env, ports, volumes, sandbox, process, secrets, size_limits)
        if container["name"] != MODELCAR:
            self.pods.append(pod)
        return pod
