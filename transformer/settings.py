"""Typed settings of the transformer: one declaration per setting (serving.settings)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serving.settings import ServerSettings, flag_bool, setting

from .cache import RedisOptions

PROTOCOLS = ("v1", "v2", "grpc-v2")
"""How the transformer can call the predictor: KServe v1 JSON, v2 REST, v2 gRPC."""


@dataclass(frozen=True)
class TransformerSettings(ServerSettings):
    """Everything the transformer needs, besides the KServe flags it leaves to KServe."""

    predictor_host: str = setting("127.0.0.1:8085", "host[:port] of the predictor (KServe injects it)")
    predictor_protocol: str = setting("v2", "how to call the predictor: v1, v2 (REST) or grpc-v2", choices=PROTOCOLS)
    predictor_use_ssl: bool = setting(False, "call the predictor over TLS", parse=flag_bool)
    predictor_deadline_s: float = setting(60.0, "keep retrying an unreachable predictor (cold start) this long, "
                                          "then 503", env="PREDICTOR_DEADLINE_S")
    predictor_request_timeout_seconds: float = setting(
        120.0, "timeout of one predictor call once connected (KServe's flag name)")
    redis_url: str = setting("redis://127.0.0.1:6379/0", "redis:// or rediss:// (TLS) URL; with --redis_cluster, "
                             "any node or the cluster's configuration/discovery endpoint", env="REDIS_URL")
    redis_cluster: bool = setting(False, "the URL names a Redis Cluster: keys are routed by hash slot, one "
                                  "pipeline per node, and each shard fails open on its own", env="REDIS_CLUSTER",
                                  parse=flag_bool)
    redis_username: str | None = setting(None, "Redis ACL user (or the URL's user part)", env="REDIS_USERNAME",
                                         parse=str)
    redis_password: str | None = setting(None, "Redis AUTH password (environment only, never a flag)",
                                         env="REDIS_PASSWORD", flag=False)
    # Not `redis_password_file`: argparse takes a flag's prefix for the flag, so `--redis_password pw` would
    # quietly become a file name instead of being refused.
    redis_auth_file: str | None = setting(None, "file holding the Redis password (a mounted Secret), read at start "
                                          "when REDIS_PASSWORD is unset", env="REDIS_PASSWORD_FILE", parse=str)
    redis_ca_cert: str | None = setting(None, "CA bundle that signed Redis' certificate, for rediss:// (unset: the "
                                        "system's CAs)", env="REDIS_CA_CERT", parse=str)
    redis_cluster_nodes_at_url_host: bool = setting(
        False, "reach every cluster node at the URL's host name, with the port the cluster reports, for nodes "
        "that report addresses their certificate does not name (Azure Cache for Redis, clustered)",
        env="REDIS_CLUSTER_NODES_AT_URL_HOST", parse=flag_bool)
    cache_ttl_s: int = setting(7 * 24 * 3600, "lifetime of a cached prediction", env="CACHE_TTL_S")
    cache_namespace: str = setting("sentiment", "first part of every cache key, e.g. the Kubernetes namespace",
                                   env="CACHE_NAMESPACE")
    redis_socket_timeout_ms: float = setting(100.0, "a Redis call slower than this counts as a miss")
    redis_connect_timeout_ms: float = setting(200.0, "Redis connect timeout")
    redis_health_check_interval_s: float = setting(
        10.0, "PING a pooled connection idle longer than this before using it, so one the server or a middlebox "
        "dropped while idle (Azure closes idle connections after 10 minutes) is replaced before the request's "
        "command is sent on it")
    redis_tcp_keepalive_s: int = setting(
        30, "TCP keepalive probes on Redis connections idle this long: they keep idle flows alive through load "
        "balancers and NAT that drop them silently (Azure Load Balancer, hence AKS egress: 4 minutes by default)")
    model_fingerprint: str | None = setting(None, "fingerprint to look up before the predictor has reported one",
                                            env="MODEL_FINGERPRINT", parse=str)
    max_inflight: int = setting(512, "requests being answered at once beyond which new ones get 429")
    near_cache_entries: int = setting(100_000, "most predictions kept in process memory in front of Redis "
                                      "(0: no near cache)", env="NEAR_CACHE_ENTRIES")
    near_cache_bytes: int = setting(64 << 20, "most bytes those predictions take, keys and bookkeeping included "
                                    "(0: no near cache)", env="NEAR_CACHE_BYTES")

    def redis_options(self) -> RedisOptions:
        """How to talk to Redis; the password comes from REDIS_PASSWORD, else from `redis_auth_file`."""
        password = self.redis_password
        if not password and self.redis_auth_file:
            password = Path(self.redis_auth_file).read_text().rstrip("\r\n")
        return RedisOptions(socket_timeout_s=self.redis_socket_timeout_ms / 1000,
                            connect_timeout_s=self.redis_connect_timeout_ms / 1000,
                            health_check_interval_s=self.redis_health_check_interval_s,
                            tcp_keepalive_s=self.redis_tcp_keepalive_s, username=self.redis_username,
                            password=password, ca_cert=self.redis_ca_cert)
