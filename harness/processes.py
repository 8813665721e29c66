"""Real server processes for tests and benchmarks: free ports, readiness deadlines, clean stops."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared")).resolve()
MODEL_DIR = SHARED / "models" / "sentiment-minilm-sst2"
LOG_DIR = Path(os.environ.get("TEST_LOG_DIR", "/tmp/sentiment-test-logs"))


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never one this process handed out before: the kernel may offer a port
    again as soon as the probe socket closes, and two servers started together would then collide."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None,
               log: Path | None = None, interval: float = 0.05) -> None:
    """Poll `check` every `interval` seconds until it returns True or `timeout` seconds pass (monotonic clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(interval)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout}s\n{tail}")


class ServerProcess:
    """A child process with its own log file; `stop` terminates it and its children, as leaving a
    `with process.start():` block does, however it ends.

    It inherits this process' environment plus `env`, or only `env` with `inherit_env=False`, and
    runs in `cwd` (another checkout's export runs that checkout's code).
    """

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None, inherit_env: bool = True,
                 pass_fds: tuple[int, ...] = (), cwd: Path = REPO):
        self.name = name
        self.args = args
        self.pass_fds = pass_fds
        self.cwd = cwd
        self.env = {**(os.environ if inherit_env else {}), **(env or {})}
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, pass_fds=self.pass_fds)
        log.close()
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def wait_ready(self, check: Callable[[], bool], timeout: float = 120, interval: float = 0.05) -> ServerProcess:
        wait_until(check, timeout, self.name, self.proc, self.log_path, interval)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if not self.alive:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def http_ready(url: str) -> Callable[[], bool]:
    return lambda: httpx.get(url, timeout=1).status_code == 200


class RedisServer(ServerProcess):
    """A throwaway redis-server on a free port, no persistence."""

    def __init__(self, port: int | None = None, password: str | None = None, tls: TlsFiles | None = None,
                 extra: list[str] | None = None):
        self.port = port or free_port()
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found; install it (apt-get install -y redis-server)")
        listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls.cert),
                  "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca),
                  "--tls-auth-clients", "no"] if tls else ["--port", str(self.port)]
        args = [binary, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--enable-debug-command", "local"]
        if password:
            args += ["--requirepass", password]
        args += extra or []  # later directives win over the ones above
        self.password = password
        self.tls = tls
        super().__init__(f"redis-{self.port}", args)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kw):
        import redis

        tls = {"ssl": True, "ssl_ca_certs": str(self.tls.ca)} if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **tls, **kw)

    def start(self) -> RedisServer:
        super().start()
        client = self.client(socket_timeout=1)
        self.wait_ready(lambda: bool(client.ping()), timeout=20)
        client.close()
        return self


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path) -> TlsFiles:
        """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it (openssl CLI)."""
        files = cls(directory / "ca.crt", directory / "server.crt", directory / "server.key")
        ca_key, csr, ext = directory / "ca.key", directory / "server.csr", directory / "san.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for cmd in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", files.ca,
             "-subj", "/CN=sentiment-test-ca", "-days", "2"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", files.key, "-out", csr, "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", csr, "-CA", files.ca, "-CAkey", ca_key, "-CAcreateserial", "-out", files.cert,
             "-days", "2", "-extfile", ext],
        ):
            subprocess.run(["openssl", *map(str, cmd)], check=True, capture_output=True)
        return files


class ModelServerProcess(ServerProcess):
    """A KServe model server (predictor or transformer) with an HTTP and a gRPC port."""

    http_port: int
    grpc_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


class PredictorProcess(ModelServerProcess):
    """`python -m predictor` on free HTTP and gRPC ports: this checkout's, or that of the export in `cwd`."""

    def __init__(self, model_dir: Path = MODEL_DIR, extra: list[str] | None = None, model_name: str = "sentiment",
                 http_port: int | None = None, grpc_port: int | None = None, env: dict[str, str] | None = None,
                 cwd: Path = REPO):
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.model_name = model_name
        args = [sys.executable, "-m", "predictor", "--model_name", model_name, "--model_dir", str(model_dir),
                "--http_port", str(self.http_port), "--grpc_port", str(self.grpc_port),
                "--enable_latency_logging", "false", *(extra or [])]
        super().__init__(f"predictor-{self.http_port}", args, env, cwd=cwd)

    def start(self, wait: bool = True) -> PredictorProcess:
        super().start()
        if wait:
            self.wait_ready(http_ready(f"{self.url}/v2/models/{self.model_name}/ready"), timeout=180)
        return self


class TransformerProcess(ModelServerProcess):
    """`python -m transformer` on free ports, pointed at a predictor and a Redis."""

    def __init__(self, predictor_host: str, redis_url: str, protocol: str = "v2", extra: list[str] | None = None,
                 env: dict[str, str] | None = None, model_name: str = "sentiment"):
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.model_name = model_name
        args = [sys.executable, "-m", "transformer", "--model_name", model_name,
                "--predictor_host", predictor_host, "--predictor_protocol", protocol, "--redis_url", redis_url,
                "--http_port", str(self.http_port), "--grpc_port", str(self.grpc_port),
                "--enable_latency_logging", "false", *(extra or [])]
        super().__init__(f"transformer-{self.http_port}", args, env)

    def start(self) -> TransformerProcess:
        super().start()
        self.wait_ready(http_ready(f"{self.url}/v2/models/{self.model_name}/ready"), timeout=60)
        return self


CLUSTER_BUS_OFFSET = 10000
"""A cluster node also listens on its port + 10000 (the cluster bus, Redis' default offset)."""


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port is free too (so the port stays below 55536)."""
    while True:
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
        except OSError:
            continue
        return port


class RedisClusterServers:
    """A Redis Cluster of throwaway redis-servers on loopback: `masters` masters with `replicas` replicas each,
    joined by `redis-cli --cluster create`, each node a `RedisServer` stopped by its PID.

    `cluster-require-full-coverage no`: while a master is down, the other shards keep answering (with the
    default, every node refuses every key until a replica has taken over). The node timeout is short, so a
    replica takes over about two seconds after its master dies. With `announce_ip`, every node tells clients
    (CLUSTER SLOTS) that it is at that loopback address instead of 127.0.0.1, as managed services report
    addresses their certificates do not name.
    """

    def __init__(self, masters: int = 3, replicas: int = 1, password: str | None = None, tls: TlsFiles | None = None,
                 node_timeout_ms: int = 1000, announce_ip: str | None = None, extra: list[str] | None = None):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="redis-cluster-", dir=LOG_DIR))
        self.masters_wanted, self.replicas = masters, replicas
        self.password, self.tls = password, tls
        self.nodes: list[RedisServer] = []
        for _ in range(masters * (1 + replicas)):
            port = free_cluster_port()
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--dir", str(node_dir),
                    "--cluster-node-timeout", str(node_timeout_ms), "--cluster-require-full-coverage", "no"]
            if password:
                args += ["--masterauth", password]
            if tls:
                args += ["--tls-cluster", "yes", "--tls-replication", "yes"]
            if announce_ip:
                args += ["--bind", "127.0.0.1", announce_ip, "--cluster-announce-ip", announce_ip]
            self.nodes.append(RedisServer(port, password=password, tls=tls, extra=args + (extra or [])))

    def url(self, node: RedisServer | None = None) -> str:
        """The URL of one node (the first by default): a cluster client discovers the rest from it."""
        return (node or self.nodes[0]).url.removesuffix("/0")

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def start(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        tls = ["--tls", "--cacert", str(self.tls.ca)] if self.tls else []
        env = {**os.environ, **({"REDISCLI_AUTH": self.password} if self.password else {})}
        subprocess.run([shutil.which("redis-cli"), *tls, "--cluster", "create",
                        *(f"127.0.0.1:{n.port}" for n in self.nodes), "--cluster-replicas", str(self.replicas),
                        "--cluster-yes"], env=env, check=True, capture_output=True, timeout=60)
        return self.wait_whole()

    def wait_whole(self, timeout: float = 60) -> RedisClusterServers:
        wait_until(self.whole, timeout, "redis cluster to be whole")
        return self

    def topology(self, via: RedisServer | None = None) -> list[dict]:
        """CLUSTER NODES as seen by `via` (else the first node that answers): port, id, role, master id, failed."""
        import redis

        for node in [via] if via else [n for n in self.nodes if n.alive]:
            client = node.client(socket_timeout=1)
            try:
                nodes = client.execute_command("CLUSTER NODES")  # parsed by redis-py: {"ip:port@bus": {...}}
                break
            except redis.RedisError:  # a stopped (SIGSTOP) node
                if via:
                    raise
            finally:
                client.close()
        else:
            raise RuntimeError("no cluster node answers")
        rows = []
        for address, row in nodes.items():
            flags = row["flags"].split(",")
            rows.append({"id": row["node_id"], "port": int(address.split("@")[0].rsplit(":", 1)[1]),
                         "role": "master" if "master" in flags else "replica",
                         "master_id": None if row["master_id"] == "-" else row["master_id"], "failed": "fail" in flags})
        return rows

    def masters(self) -> list[RedisServer]:
        return [self.node(row["port"]) for row in self.topology() if row["role"] == "master" and not row["failed"]]

    def replica_of(self, master: RedisServer) -> RedisServer:
        rows = self.topology()
        master_id = next(row["id"] for row in rows if row["port"] == master.port)
        return next(self.node(row["port"]) for row in rows if row["master_id"] == master_id and not row["failed"])

    def whole(self) -> bool:
        """Every node up and agreeing: cluster state ok, all slots served, each master with a synced replica."""
        import redis

        try:
            return all(n.alive for n in self.nodes) and self._agree()
        except redis.RedisError:
            return False

    def _agree(self) -> bool:
        for node in self.nodes:
            client = node.client(socket_timeout=2)
            try:
                info = client.execute_command("CLUSTER INFO")
                replication = client.info("replication")
            finally:
                client.close()
            if (info["cluster_state"] != "ok" or info["cluster_slots_ok"] != "16384"
                    or int(info["cluster_known_nodes"]) != len(self.nodes)):
                return False
            if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                return False
        rows = self.topology()
        masters = sum(row["role"] == "master" for row in rows)
        return masters == self.masters_wanted and not any(row["failed"] for row in rows)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
