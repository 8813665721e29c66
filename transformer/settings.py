"""Typed settings for the transformer, built once from CLI flags and the environment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from predictor.inputs import TextLimits

from .predictor_client import PROTOCOLS


@dataclass(frozen=True)
class TransformerSettings:
    """Everything the transformer needs; KServe's own server flags stay with KServe."""

    model_name: str = "sentiment"
    """Name on the endpoint paths; also the predictor's model name."""
    predictor_host: str = "127.0.0.1:8085"
    """host[:port] of the predictor (KServe injects it in a cluster)."""
    predictor_protocol: str = "v2"
    """How to call the predictor: v1, v2 (REST) or grpc-v2."""
    predictor_use_ssl: bool = False
    predictor_deadline_s: float = 60
    """How long to keep retrying an unreachable predictor (cold start) before answering 503."""
    predictor_timeout_s: float = 120
    """Timeout of one predictor call once connected (the InferenceService's component timeout)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """redis:// or rediss:// (TLS) URL; a password may be in the URL or in REDIS_PASSWORD."""
    redis_password: str | None = None
    redis_ca_cert: str | None = None
    """CA bundle that signed Redis' TLS certificate (rediss:// only); default: the system's CAs."""
    cache_ttl_s: int = 7 * 24 * 3600
    """Lifetime of a cached prediction."""
    cache_namespace: str = "sentiment"
    """First part of every key, e.g. the Kubernetes namespace, so tenants sharing a Redis never collide."""
    redis_socket_timeout_s: float = 0.1
    redis_connect_timeout_s: float = 0.2
    redis_health_check_interval_s: float = 10
    model_fingerprint: str | None = None
    """Fingerprint to use for lookups before the predictor has reported its own."""
    limits: TextLimits = field(default_factory=TextLimits)
    max_inflight: int = 512
    """Requests being answered at once beyond which new ones get 429."""
    log_requests: bool = False
    """Write an access-log and a timing line per request (off: they cost more than a cache hit)."""


def build_parser(parent: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m transformer", parents=[parent] if parent else [], conflict_handler="resolve",
        description="Sentiment transformer: Redis cache in front of the predictor (KServe model server).")
    d = TransformerSettings()
    parser.add_argument("--model_name", default=d.model_name)
    parser.add_argument("--predictor_host", default=d.predictor_host)
    parser.add_argument("--predictor_protocol", choices=PROTOCOLS, default=d.predictor_protocol)
    parser.add_argument("--predictor_deadline_s", type=float, default=None,
                        help=f"retry an unreachable predictor this long (env PREDICTOR_DEADLINE_S, "
                             f"default {d.predictor_deadline_s:g})")
    parser.add_argument("--redis_url", default=None, help=f"env REDIS_URL, default {d.redis_url}")
    parser.add_argument("--cache_ttl_s", type=int, default=None, help=f"env CACHE_TTL_S, default {d.cache_ttl_s}")
    parser.add_argument("--cache_namespace", default=None, help="env CACHE_NAMESPACE, default sentiment")
    parser.add_argument("--redis_ca_cert", default=None,
                        help="env REDIS_CA_CERT: CA bundle for a rediss:// URL (default: the system's CAs)")
    parser.add_argument("--redis_socket_timeout_ms", type=float, default=d.redis_socket_timeout_s * 1000)
    parser.add_argument("--redis_connect_timeout_ms", type=float, default=d.redis_connect_timeout_s * 1000)
    parser.add_argument("--redis_health_check_interval_s", type=float, default=d.redis_health_check_interval_s)
    parser.add_argument("--model_fingerprint", default=None, help="env MODEL_FINGERPRINT")
    parser.add_argument("--log_requests", action="store_true", help="access and timing log line per request")
    parser.add_argument("--max_inflight", type=int, default=d.max_inflight, help="concurrent requests before 429")
    parser.add_argument("--max_texts", type=int, default=d.limits.max_texts, help="max texts per request")
    parser.add_argument("--max_chars", type=int, default=d.limits.max_chars, help="max characters per text")
    parser.add_argument("--max_body_bytes", type=int, default=d.limits.max_body_bytes, help="max request body size")
    parser.add_argument("--predictor_request_timeout_seconds", type=int, default=int(d.predictor_timeout_s),
                        help="timeout of one predictor call once connected")
    if parent is None:
        parser.add_argument("--predictor_use_ssl", action="store_true")
    return parser


def settings_from(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> TransformerSettings:
    d = TransformerSettings()
    deadline = args.predictor_deadline_s if args.predictor_deadline_s is not None else \
        float(env.get("PREDICTOR_DEADLINE_S", d.predictor_deadline_s))
    return TransformerSettings(
        model_name=args.model_name,
        predictor_host=args.predictor_host,
        predictor_protocol=args.predictor_protocol,
        predictor_use_ssl=bool(args.predictor_use_ssl),
        predictor_deadline_s=deadline,
        predictor_timeout_s=float(args.predictor_request_timeout_seconds),
        redis_url=args.redis_url or env.get("REDIS_URL") or d.redis_url,
        redis_password=env.get("REDIS_PASSWORD") or None,
        redis_ca_cert=args.redis_ca_cert or env.get("REDIS_CA_CERT") or None,
        cache_ttl_s=args.cache_ttl_s or int(env.get("CACHE_TTL_S", d.cache_ttl_s)),
        cache_namespace=args.cache_namespace or env.get("CACHE_NAMESPACE") or d.cache_namespace,
        redis_socket_timeout_s=args.redis_socket_timeout_ms / 1000,
        redis_connect_timeout_s=args.redis_connect_timeout_ms / 1000,
        redis_health_check_interval_s=args.redis_health_check_interval_s,
        model_fingerprint=args.model_fingerprint or env.get("MODEL_FINGERPRINT") or None,
        limits=TextLimits(max_texts=args.max_texts, max_chars=args.max_chars, max_body_bytes=args.max_body_bytes),
        log_requests=args.log_requests,
        max_inflight=args.max_inflight,
    )


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> TransformerSettings:
    """Settings from `argv` alone (no KServe flags); used by tests."""
    return settings_from(build_parser().parse_args(argv), env)
