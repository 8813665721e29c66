"""The original app's bug, 500s after a long quiet spell: Redis (Azure: after 10 minutes) closes idle connections.

Here a redis-server with `--timeout 2` closes them after 2 s. After 5 s without traffic the first
request is a hit on its first try, with no cache error counted and nothing logged at WARNING or
above, on one node and on a cluster, with the transformer's default connection settings.
"""

from __future__ import annotations

import re
import socket
import time
import uuid

import numpy as np
import pytest

from harness.clients import metric, predictor_probs, seed_predict
from harness.processes import RedisClusterServers, RedisServer, TransformerProcess, wait_until

IDLE_S = 5
SERVER_TIMEOUT = ["--timeout", "2"]
REDIS_ONLY = ["--near_cache_entries", "0"]  # every hit is a Redis read
LOUD = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")


def clients_of(server: RedisServer) -> int:
    """Client connections the server holds besides this one (replication links are not clients)."""
    admin = server.client(socket_timeout=2)
    try:
        return len(admin.client_list(_type="normal")) - 1
    finally:
        admin.close()


@pytest.fixture(params=["one node", "cluster"])
def idle_closing_redis(request):
    if request.param == "one node":
        server = RedisServer(extra=SERVER_TIMEOUT).start()
        yield [server], server.url, []
        server.stop()
    else:
        cluster = RedisClusterServers(extra=SERVER_TIMEOUT).start()
        yield cluster.nodes, cluster.url(), ["--redis_cluster"]
        cluster.stop()


def test_first_request_after_idle_close_is_a_hit_and_quiet(predictor, idle_closing_redis):
    servers, url, mode = idle_closing_redis
    transformer = TransformerProcess(f"127.0.0.1:{predictor.http_port}", url,
                                     extra=[*mode, "--cache_namespace", "idle", *REDIS_ONLY]).start()
    try:
        texts = [f"a quiet evening with a film number {i} {uuid.uuid4().hex}" for i in range(6)]
        expected = predictor_probs(predictor, texts)
        np.testing.assert_allclose(seed_predict(transformer, texts), expected, atol=1e-6)
        last_request = time.monotonic()
        assert sum(clients_of(s) for s in servers) >= len(servers) // 2  # the transformer holds pooled connections
        # The servers close them (timeout 2 s); the transformer sees no traffic for IDLE_S.
        wait_until(lambda: time.monotonic() - last_request >= IDLE_S and all(clients_of(s) == 0 for s in servers),
                   IDLE_S + 10, "redis to close the transformer's idle connections")
        log_before = len(transformer.log())
        hits, errors = metric(transformer, "sentiment_cache_hits_total"), metric(transformer,
                                                                                 "sentiment_cache_errors_total")
        np.testing.assert_allclose(seed_predict(transformer, texts), expected, atol=1e-6)  # one request, one try
        assert metric(transformer, "sentiment_cache_hits_total") - hits == len(texts)
        assert metric(transformer, "sentiment_cache_errors_total") == errors
        assert not [line for line in transformer.log()[log_before:].splitlines() if LOUD.search(line)]
    finally:
        transformer.stop()


def test_default_keepalive_and_health_check_fit_azure_idle_limits():
    """The defaults the settings' help promises: a health check well inside Azure Cache for Redis' 10 idle
    minutes, and keepalive probes, all of them, inside the 4 idle minutes of Azure's Load Balancer."""
    from transformer.cache import keepalive_options
    from transformer.settings import TransformerSettings

    s = TransformerSettings()
    assert s.redis_health_check_interval_s < 10 * 60
    options = keepalive_options(s.redis_tcp_keepalive_s)
    assert options[socket.TCP_KEEPIDLE] == s.redis_tcp_keepalive_s
    assert s.redis_tcp_keepalive_s + options[socket.TCP_KEEPINTVL] * options[socket.TCP_KEEPCNT] < 4 * 60
