"""The Redis Cluster tier against a real local cluster (three masters, three replicas, harness.RedisClusterServers),
real transformers and predictors: where entries land, answers without the predictor, failovers under load, TLS."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
import uuid

import httpx
import numpy as np
import pytest

from harness.clients import keys_in, metric, predictor_answers, predictor_probs, rows_to_probs, seed_predict
from harness.processes import (
    PredictorProcess,
    RedisClusterServers,
    TlsFiles,
    TransformerProcess,
    wait_until,
)
from harness.sst2 import dev_set

REDIS_ONLY = ["--near_cache_entries", "0"]  # every hit is a Redis read
REDIS_HITS = 'sentiment_cache_hits_total{tier="redis"}'
CACHE_BUDGET_S = 0.3  # the cluster cache's own limit per operation: connect (200 ms) + socket (100 ms) timeouts


@pytest.fixture(scope="module")
def cluster():
    # A replica takes over about 3 s after its master dies: time for the probes below to look first.
    servers = RedisClusterServers(node_timeout_ms=2000).start()
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def sentences():
    return dev_set()[0]


def namespace() -> str:
    return f"cl-{uuid.uuid4().hex[:8]}"


def on_cluster(predictor, url: str, ns: str, extra: list[str] | None = None,
               env: dict[str, str] | None = None) -> TransformerProcess:
    return TransformerProcess(f"127.0.0.1:{predictor.http_port}", url,
                              extra=["--redis_cluster", "--cache_namespace", ns, *REDIS_ONLY, *(extra or [])], env=env)


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).hexdigest().encode()


def shard_of(cluster: RedisClusterServers, ns: str, texts: list[str]) -> dict[str, int]:
    """The port of the master that holds each text's entry."""
    where = {key.rsplit(b":", 1)[1]: master.port for master in cluster.masters() for key in keys_in(master, ns)}
    return {t: where[digest(t)] for t in texts}


def redis_hits(transformer, texts: list[str], one_by_one: bool = False) -> float:
    """Texts of `texts` the transformer answered from Redis (asked in one request, or one request each)."""
    before = metric(transformer, REDIS_HITS)
    for batch in ([t] for t in texts) if one_by_one else [texts]:
        seed_predict(transformer, batch)
    return metric(transformer, REDIS_HITS) - before


def test_entries_land_on_every_master_and_a_cross_slot_request_reads_them_back(predictor, cluster, sentences):
    ns = namespace()
    transformer = on_cluster(predictor, cluster.url(), ns).start()
    try:
        texts = sentences[:60]
        expected = predictor_probs(predictor, texts)
        np.testing.assert_allclose(seed_predict(transformer, texts), expected, atol=1e-6)
        per_master = {m.port: set(keys_in(m, ns)) for m in cluster.masters()}
        assert len(per_master) == 3 and all(per_master.values()), {p: len(k) for p, k in per_master.items()}
        assert len(set().union(*per_master.values())) == sum(map(len, per_master.values())) == len(texts)
        owner = cluster.masters()[0]
        client = owner.client()
        assert all(604000 < client.ttl(key) <= 604800 for key in per_master[owner.port])  # --cache_ttl_s
        client.close()
        # One request, 60 keys in about 60 slots on three nodes: all of them hits, read back from Redis.
        assert redis_hits(transformer, texts) == len(texts)
        np.testing.assert_allclose(seed_predict(transformer, texts), expected, atol=1e-6)
        assert metric(transformer, "sentiment_cache_errors_total") == 0
    finally:
        transformer.stop()


def test_with_the_predictor_stopped_cached_sentences_are_answered_from_the_cluster(model_dir, cluster, sentences):
    own = PredictorProcess(model_dir).start()
    transformer = on_cluster(own, cluster.url(), namespace())
    try:
        transformer.start()
        texts = sentences[60:90]
        answers = seed_predict(transformer, texts)
        own.stop()
        misses = metric(transformer, "sentiment_cache_misses_total")
        assert redis_hits(transformer, texts) == len(texts)
        np.testing.assert_allclose(seed_predict(transformer, texts), answers, atol=1e-6)
        assert metric(transformer, "sentiment_cache_misses_total") == misses
    finally:
        transformer.stop()
        own.stop()


def test_the_near_cache_copies_cluster_hits_with_their_remaining_ttl(predictor, cluster, sentences):
    """In front of the cluster as in front of one node: a second transformer's first read is a Redis hit
    (values and TTLs from every shard in one round trip each), its next one a memory hit."""
    ns = namespace()
    writer = on_cluster(predictor, cluster.url(), ns)
    reader = TransformerProcess(f"127.0.0.1:{predictor.http_port}", cluster.url(),
                                extra=["--redis_cluster", "--cache_namespace", ns])  # near cache on (default)
    try:
        writer.start()
        reader.start()
        texts = sentences[90:100]
        expected = predictor_probs(predictor, texts)
        seed_predict(reader, [sentences[89]])  # learns the model's fingerprint
        np.testing.assert_allclose(seed_predict(writer, texts), expected, atol=1e-6)
        np.testing.assert_allclose(seed_predict(reader, texts), expected, atol=1e-6)
        assert metric(reader, REDIS_HITS) == len(texts)
        np.testing.assert_allclose(seed_predict(reader, texts), expected, atol=1e-6)
        assert metric(reader, 'sentiment_cache_hits_total{tier="memory"}') == len(texts)
        assert metric(reader, REDIS_HITS) == len(texts)
    finally:
        writer.stop()
        reader.stop()


class Load:
    """`clients` threads asking for one or two texts of `pool` at a time, each answer checked against `truth`."""

    def __init__(self, url: str, pool: list[str], truth: dict[str, np.ndarray], clients: int = 4):
        self.url, self.pool, self.truth = url, pool, truth
        self.lock = threading.Lock()
        self.requests = self.errors = self.wrong = 0
        self.latencies: list[tuple[float, float]] = []  # (monotonic start, seconds)
        self.problems: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(random.Random(i),)) for i in range(clients)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(60)

    def _run(self, rng: random.Random) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.stopping.is_set():
                texts = rng.sample(self.pool, rng.choice((1, 2)))
                start = time.monotonic()
                error = wrong = None
                try:
                    r = http.post(f"{self.url}/v1/models/sentiment:predict", json={"text": texts})
                    if r.status_code != 200:
                        error = f"{r.status_code} {r.text[:200]}"
                    else:
                        got = rows_to_probs(r.json()["predictions"])
                        if not np.allclose(got, [self.truth[t] for t in texts], atol=1e-5):
                            wrong = f"{texts}: {got.tolist()}"
                except httpx.HTTPError as exc:
                    error = repr(exc)
                took = time.monotonic() - start
                with self.lock:
                    self.requests += 1
                    self.latencies.append((start, took))
                    if error or wrong:
                        self.errors += bool(error)
                        self.wrong += bool(wrong)
                        self.problems.append(error or wrong)

    def worst_since(self, moment: float) -> float:
        with self.lock:
            return max((took for start, took in self.latencies if start >= moment), default=0.0)

    def figures(self, since: float) -> dict:
        with self.lock:
            during = [took for start, took in self.latencies if start >= since]
        return {"requests": self.requests, "errors": self.errors, "wrong": self.wrong,
                "requests_since_fault": len(during), "worst_ms_since_fault": round(1000 * max(during, default=0), 1)}


def test_manual_failover_under_load_gives_no_errors_and_no_wrong_answers(predictor, cluster, sentences):
    ns = namespace()
    pool = sentences[100:160]
    truth = predictor_answers(predictor, pool, chunk=60)
    transformer = on_cluster(predictor, cluster.url(), ns).start()
    try:
        seed_predict(transformer, pool[:40])  # the rest are misses at first, written back under load
        master = next(m for m in cluster.masters() if m is not cluster.nodes[0])
        replica = cluster.replica_of(master)
        with Load(transformer.url, pool, truth) as load:
            wait_until(lambda: load.requests >= 100, 60, "load to run")
            fault = time.monotonic()
            admin = replica.client(socket_timeout=5)
            assert admin.execute_command("CLUSTER FAILOVER") in (b"OK", "OK", True)
            admin.close()
            wait_until(lambda: replica in cluster.masters() and master not in cluster.masters(), 20,
                       "the replica to take over")
            after = load.requests
            wait_until(lambda: load.requests >= after + 200, 60, "load to go on after the failover")
        figures = load.figures(fault)
        print(f"\nCLUSTER FAILOVER under load: {figures}")
        assert (load.errors, load.wrong) == (0, 0), load.problems[:5]
        wait_until(lambda: redis_hits(transformer, pool) == len(pool), 20, "every pool text to hit again")
        cluster.wait_whole()
    finally:
        transformer.stop()


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
def test_a_lost_master_costs_only_its_shard_until_its_replica_takes_over(predictor, cluster, sentences, fault):
    """SIGKILL: connections refused at once. SIGSTOP: a master gone silent (a node lost in the network),
    whose connections hang: the cache's budget bounds what a request waits for it."""
    ns = namespace()
    pool = sentences[200:260]
    truth = predictor_answers(predictor, pool, chunk=60)
    victim = cluster.masters()[0]
    replica = cluster.replica_of(victim)
    via = next(m for m in cluster.masters() if m is not victim)  # the endpoint the transformers discover through
    loaded, probe = (on_cluster(predictor, cluster.url(via), ns) for _ in range(2))
    try:
        loaded.start()
        probe.start()
        seed_predict(probe, pool)
        shards = shard_of(cluster, ns, pool)
        lost = [t for t in pool if shards[t] == victim.port]
        kept = [t for t in pool if shards[t] != victim.port]
        assert lost and kept
        with Load(loaded.url, pool, truth) as load:
            wait_until(lambda: load.requests >= 100, 60, "load to run")
            # The predictor's own time for a miss under this load, measured now, bounds what requests may wait.
            predictor_s = 0.0
            for i in range(3):
                start = time.monotonic()
                predictor_probs(predictor, [f"{i} a fresh sentence to time the predictor {uuid.uuid4().hex}"] * 2)
                predictor_s = max(predictor_s, time.monotonic() - start)
            faulted = time.monotonic()
            os.killpg(victim.proc.pid, fault)
            # Before the replica takes over: the other shards still answer, only the victim's keys miss.
            kept_hits, lost_hits = redis_hits(probe, kept[:4], one_by_one=True), redis_hits(probe, lost[:2])
            promoted = {row["port"] for row in cluster.topology(via=replica) if row["role"] == "master"}
            assert replica.port not in promoted, "the failover came before the probes could look"
            assert (kept_hits, lost_hits) == (4, 0)
            wait_until(lambda: replica in cluster.masters(), 30, "the replica to take over")
            wait_until(lambda: redis_hits(probe, lost[:4]) == len(lost[:4]), 20, "the lost shard's keys to hit again")
            after = load.requests
            wait_until(lambda: load.requests >= after + 100, 60, "load to go on after the takeover")
        figures = load.figures(faulted)
        print(f"\n{fault.name} of a master under load: {figures}, predictor alone {1000 * predictor_s:.0f} ms")
        assert (load.errors, load.wrong) == (0, 0), load.problems[:5]
        # A lookup and a write-back, each within the cache's budget, plus the predictor (generous: shared CPUs).
        assert load.worst_since(faulted) <= 2 * CACHE_BUDGET_S + 3 * predictor_s + 0.5, figures
        if fault == signal.SIGSTOP:
            os.killpg(victim.proc.pid, signal.SIGCONT)
        else:
            victim.start()
        cluster.wait_whole()  # the old master is back, as a replica of its old shard
        wait_until(lambda: redis_hits(probe, pool) == len(pool), 20, "every pool text to hit again")
    finally:
        loaded.stop()
        probe.stop()
        if not victim.alive:
            victim.start()
        else:
            os.killpg(victim.proc.pid, signal.SIGCONT)


def test_tls_cluster_with_a_private_ca_and_nodes_reported_at_other_addresses(predictor, sentences, tmp_path):
    """TLS on every port (clients, bus, replication) with a private CA. The nodes report 127.0.0.2, which
    their certificate (127.0.0.1, localhost) does not name, as Azure's clustered caches report addresses
    their certificate does not name: with --redis_cluster_nodes_at_url_host and the CA everything is cached;
    without either, verification fails and the transformer still answers, failing open."""
    tls = TlsFiles.create(tmp_path)
    cluster = RedisClusterServers(tls=tls, password="cluster-pw", announce_ip="127.0.0.2").start()
    url = f"rediss://127.0.0.1:{cluster.nodes[0].port}"
    secrets = {"REDIS_PASSWORD": "cluster-pw"}
    remapping = ["--redis_cluster_nodes_at_url_host"]
    ns = namespace()
    working = on_cluster(predictor, url, ns, remapping, {**secrets, "REDIS_CA_CERT": str(tls.ca)})
    unmapped = on_cluster(predictor, url, ns, env={**secrets, "REDIS_CA_CERT": str(tls.ca)})
    untrusting = on_cluster(predictor, url, ns, remapping, secrets)
    try:
        working.start()
        # The first slot map reading (TLS handshakes, COMMAND) may outlast the first write-back: wait for it.
        wait_until(lambda: seed_predict(working, [sentences[299]]) is not None
                   and any(keys_in(m, ns) for m in cluster.masters()), 20, "the cluster to take writes")
        texts = sentences[300:330]
        expected = predictor_probs(predictor, texts)
        np.testing.assert_allclose(seed_predict(working, texts), expected, atol=1e-6)
        per_master = [keys_in(m, ns) for m in cluster.masters()]
        assert len(per_master) == 3 and all(per_master) and sum(map(len, per_master)) == len(texts) + 1
        assert redis_hits(working, texts) == len(texts)
        for refused in (unmapped.start(), untrusting.start()):
            fresh = sentences[330:333] if refused is unmapped else sentences[333:336]
            np.testing.assert_allclose(seed_predict(refused, fresh), predictor_probs(predictor, fresh), atol=1e-6)
            assert redis_hits(refused, texts) == 0
            assert metric(refused, "sentiment_cache_errors_total") >= 1
        assert sum(len(keys_in(m, ns)) for m in cluster.masters()) == len(texts) + 1
    finally:
        for proc in (working, unmapped, untrusting):
            proc.stop()
        cluster.stop()


def test_acl_user_with_its_password_from_a_file(predictor, sentences, tmp_path):
    """An ACL user (REDIS_USERNAME) whose password comes from a mounted file (REDIS_PASSWORD_FILE), never argv;
    the default user's password (the admin's) is not given to the transformer."""
    acl = ["--user", "cache", "on", ">cache-pw", "~*", "+@all"]
    cluster = RedisClusterServers(password="admin-pw", extra=acl).start()
    secret = tmp_path / "password"
    secret.write_text("cache-pw\n")  # as a Secret's file often ends
    ns = namespace()
    transformer = on_cluster(predictor, f"redis://127.0.0.1:{cluster.nodes[0].port}", ns,
                             env={"REDIS_USERNAME": "cache", "REDIS_PASSWORD_FILE": str(secret)})
    try:
        transformer.start()
        wait_until(lambda: seed_predict(transformer, [sentences[399]]) is not None
                   and any(keys_in(m, ns) for m in cluster.masters()), 20, "the cluster to take writes")
        texts = sentences[400:420]
        seed_predict(transformer, texts)
        assert sum(len(keys_in(m, ns)) for m in cluster.masters()) == len(texts) + 1
        assert redis_hits(transformer, texts) == len(texts)
        assert "cache-pw" not in " ".join(transformer.args)
        admin = cluster.nodes[0].client()
        assert any(c.get("user") == "cache" for c in admin.client_list(_type="normal"))
        admin.close()
    finally:
        transformer.stop()
        cluster.stop()


def test_a_pooled_connection_whose_transport_was_closed_is_resent_not_an_error(cluster):
    """A node killed under load closes its connections' transports; on uvloop, the next write on one raises
    RuntimeError, which redis-py passes through. The cache resends on a new connection (seen once as a 500)."""
    import asyncio

    import uvloop

    from transformer.cluster_cache import ClusterPredictionCache

    ns = namespace()
    items = {f"{ns}:{i}": f"value {i}".encode() for i in range(30)}  # spread over every master's slots

    async def scenario() -> list:
        cache = ClusterPredictionCache(cluster.url(), ttl_s=60)
        try:
            await cache.set_many(items)
            closed = 0
            for node in cache.client.get_nodes():
                for connection in node._free:
                    if connection._writer is not None:
                        connection._writer.transport.abort()  # what a killed node leaves in the pool
                        closed += 1
            assert closed, "no pooled connection to close"
            return await cache.get_many(list(items))
        finally:
            await cache.close()

    hits = uvloop.run(scenario()) if hasattr(uvloop, "run") else asyncio.run(scenario())
    assert [hit.value if hit else None for hit in hits] == list(items.values())
