"""Typed settings of the transformer: one declaration per setting (serving.settings)."""

from __future__ import annotations

from dataclasses import dataclass

from serving.settings import ServerSettings, flag_bool, setting

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
    redis_url: str = setting("redis://127.0.0.1:6379/0", "redis:// or rediss:// (TLS) URL", env="REDIS_URL")
    redis_password: str | None = setting(None, "Redis AUTH password (environment only, never a flag)",
                                         env="REDIS_PASSWORD", flag=False)
    redis_ca_cert: str | None = setting(None, "CA bundle that signed Redis' certificate, for rediss:// (unset: the "
                                        "system's CAs)", env="REDIS_CA_CERT", parse=str)
    cache_ttl_s: int = setting(7 * 24 * 3600, "lifetime of a cached prediction", env="CACHE_TTL_S")
    cache_namespace: str = setting("sentiment", "first part of every cache key, e.g. the Kubernetes namespace",
                                   env="CACHE_NAMESPACE")
    redis_socket_timeout_ms: float = setting(100.0, "a Redis call slower than this counts as a miss")
    redis_connect_timeout_ms: float = setting(200.0, "Redis connect timeout")
    redis_health_check_interval_s: float = setting(10.0, "ping pooled Redis connections idle longer than this")
    model_fingerprint: str | None = setting(None, "fingerprint to look up before the predictor has reported one",
                                            env="MODEL_FINGERPRINT", parse=str)
    max_inflight: int = setting(512, "requests being answered at once beyond which new ones get 429")
    near_cache_entries: int = setting(100_000, "most predictions kept in process memory in front of Redis "
                                      "(0: no near cache)", env="NEAR_CACHE_ENTRIES")
    near_cache_bytes: int = setting(64 << 20, "most bytes those predictions take, keys and bookkeeping included "
                                    "(0: no near cache)", env="NEAR_CACHE_BYTES")
