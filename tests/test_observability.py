"""The Grafana dashboard and the alert rules, checked against a real Prometheus scraping the local stack.

Every PromQL expression of `observability/sentiment-dashboard.json` and `observability/sentiment-rules.yaml`
is sent to Prometheus' HTTP API after some traffic: each must parse and return data, so a misspelled
metric, label or function fails here. Alerts are checked on their signal: the threshold comparison
at the top of the expression becomes a `bool` comparison, which returns a series whether or not the
alert would fire. The only expressions allowed to return nothing are those over the metrics of
CLUSTER_ONLY_METRICS, which nothing on this machine can produce.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harness.processes import (
    REPO,
    PredictorProcess,
    RedisServer,
    ServerProcess,
    TransformerProcess,
    free_port,
    http_ready,
)

DASHBOARD = REPO / "observability" / "sentiment-dashboard.json"
RULES = REPO / "observability" / "sentiment-rules.yaml"
# Metrics that only a cluster has. Keep this short: every entry is an expression this test cannot check.
CLUSTER_ONLY_METRICS = {
    # kube-state-metrics reads Deployment objects from the Kubernetes API (the replicas of each Knative
    # revision, 0 when scaled to zero); there is no Kubernetes API here.
    "kube_deployment_status_replicas_available",
    "kube_deployment_spec_replicas",
}
# Grafana's variables, as a query of the whole local stack: no namespace label here, and a window that
# holds all of the test's traffic.
GRAFANA_VARIABLES = {"$namespace": ".*", "$__rate_interval": "5m"}
SCRAPE_DEADLINE_S = 90


@dataclass(frozen=True)
class Query:
    where: str
    expr: str

    @property
    def cluster_only(self) -> bool:
        return any(re.search(rf"\b{name}\b", self.expr) for name in CLUSTER_ONLY_METRICS)


def dashboard_queries(dashboard: dict) -> list[Query]:
    """Every target of every panel (rows' nested panels too), Grafana's variables filled in."""
    queries = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                queries.append(Query(f"panel {panel['title']!r} target {target['refId']}", expr))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return queries


def rule_queries(rules: dict) -> list[Query]:
    """Recording rules as they are; alerts as their signal (threshold comparison made `bool`)."""
    queries = []
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                queries.append(Query(f"alert {rule['alert']}", as_signal(rule["expr"])))
            else:
                queries.append(Query(f"record {rule['record']}", rule["expr"]))
    return queries


COMPARISON = re.compile(r"==|!=|>=|<=|>|<")


def as_signal(expr: str) -> str:
    """`signal > threshold` -> `signal > bool threshold`: the last comparison outside brackets, braces
    and strings. An expression without one is returned unchanged."""
    depth, quote, last = 0, None, None
    i = 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and (m := COMPARISON.match(expr, i)):
            last = m
            i = m.end()
            continue
        i += 1
    if last is None or re.match(r"\s*bool\b", expr[last.end():]):
        return expr
    return f"{expr[:last.end()]} bool{expr[last.end():]}"


class PrometheusServer(ServerProcess):
    """`prometheus` on a free loopback port, scraping static targets every second, with a rule file."""

    def __init__(self, directory: Path, targets: dict[str, list[str]], rule_file: Path):
        self.port = free_port()
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus not found; install it (apt-get install -y prometheus)")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rule_file)],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": hosts}]}
                               for job, hosts in targets.items()],
        }
        config_file = directory / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        super().__init__(f"prometheus-{self.port}", [
            binary, f"--config.file={config_file}", f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        super().start()
        self.wait_ready(http_ready(f"{self.url}/-/ready"), timeout=60)
        return self

    def query(self, expr: str) -> dict:
        return httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()


def problems(prometheus: PrometheusServer, queries: list[Query]) -> list[str]:
    """What is wrong with each query: a Prometheus error (parse, type), or no data where data is due."""
    found = []
    for q in queries:
        answer = prometheus.query(q.expr)
        if answer["status"] != "success":
            found.append(f"{q.where}: {answer.get('errorType')}: {answer.get('error')}\n    {q.expr}")
        elif not answer["data"]["result"] and not q.cluster_only:
            found.append(f"{q.where}: no data\n    {q.expr}")
    return found


def problems_once_scraped(prometheus: PrometheusServer, queries: list[Query]) -> list[str]:
    """Poll until every query is answered with data or the deadline passes; the problems left."""
    deadline = time.monotonic() + SCRAPE_DEADLINE_S
    while True:
        found = problems(prometheus, queries)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def rule_file(directory: Path) -> Path:
    """The PrometheusRule's spec: a plain Prometheus rule file."""
    path = directory / "sentiment.rules.yml"
    path.write_text(yaml.safe_dump(yaml.safe_load(RULES.read_text())["spec"]))
    return path


def send_traffic(transformer: TransformerProcess, unreachable: TransformerProcess, redis: RedisServer) -> None:
    """Misses, hits, bad input (422), an overloaded predictor (429), a dead predictor (503), Redis down."""
    bulk, v1 = f"{transformer.url}/bulk-predict", f"{transformer.url}/v1/models/sentiment:predict"
    texts = ["I love this movie", "This was a terrible waste of time"]
    first = httpx.post(bulk, json={"text": texts}, timeout=60)
    assert first.status_code == 200, first.text
    again = httpx.post(bulk, json={"text": texts}, timeout=60)
    assert again.json() == first.json()
    assert httpx.post(v1, json={"instances": texts[:1]}, timeout=60).status_code == 200
    v2 = httpx.post(f"{transformer.url}/v2/models/sentiment/infer", timeout=60, json={
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["A fine, quiet film"]}]})
    assert v2.status_code == 200, v2.text
    assert httpx.post(bulk, json={"text": "not a list"}, timeout=60).status_code == 422
    # The predictor takes at most 4 queued texts (--max_queued_texts 4): six new ones are refused.
    overload = httpx.post(bulk, json={"text": [f"new sentence number {i}" for i in range(6)]}, timeout=60)
    assert overload.status_code == 429, overload.text
    dead = httpx.post(f"{unreachable.url}/bulk-predict", json={"text": ["nobody answers this"]}, timeout=60)
    assert dead.status_code == 503, dead.text
    redis.stop()
    for text in ("Redis is gone", "and the cache fails open"):  # errors counted, answers still 200
        assert httpx.post(bulk, json={"text": [text]}, timeout=60).status_code == 200


@pytest.fixture(scope="module")
def prometheus(model_dir):
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed: apt-get install -y prometheus (make system-deps does)")
    procs: list[ServerProcess] = []
    with tempfile.TemporaryDirectory(prefix="sentiment-prometheus-") as tmp:
        try:
            redis = RedisServer().start()
            procs.append(redis)
            predictor = PredictorProcess(model_dir, extra=["--max_queued_texts", "4"]).start()
            procs.append(predictor)
            transformer = TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis.url).start()
            procs.append(transformer)
            unreachable = TransformerProcess(f"127.0.0.1:{free_port()}", redis.url,
                                             extra=["--predictor_deadline_s", "0.5"]).start()
            procs.append(unreachable)
            server = PrometheusServer(Path(tmp), rule_file=rule_file(Path(tmp)), targets={
                "transformer": [f"127.0.0.1:{transformer.http_port}", f"127.0.0.1:{unreachable.http_port}"],
                "predictor": [f"127.0.0.1:{predictor.http_port}"]}).start()
            procs.append(server)
            send_traffic(transformer, unreachable, redis)
            yield server
        finally:
            for proc in reversed(procs):
                proc.stop()


SELECTOR = re.compile(r"\b(sentiment_\w+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def selectors(queries: list[Query]) -> set[tuple[str, tuple[tuple[str, str, str], ...]]]:
    """Each `sentiment_*` series selector of the queries: its name and label matchers."""
    return {(name, tuple(MATCHER.findall(labels or ""))) for q in queries for name, labels in SELECTOR.findall(q.expr)}


def matches(labels: dict[str, str], matchers: tuple[tuple[str, str, str], ...]) -> bool:
    """PromQL's matching: an absent label is the empty string, regexes are anchored."""
    for label, op, value in matchers:
        actual = labels.get(label, "")
        found = re.fullmatch(value, actual) is not None if op in ("=~", "!~") else actual == value
        if found != (op in ("=", "=~")):
            return False
    return True


def test_a_fresh_stack_has_every_series_the_dashboard_and_rules_query(model_dir, redis_server):
    """Before any request: every selector of the dashboard and the rules (name and labels) has a sample, so
    no panel says "No data" and every rate() has a series to work from on a healthy stack."""
    wanted = selectors(dashboard_queries(json.loads(DASHBOARD.read_text()))
                       + rule_queries(yaml.safe_load(RULES.read_text())))
    assert {name for name, _ in wanted} >= {"sentiment_cache_errors_total", "sentiment_predictor_errors_total",
                                            "sentiment_predictor_rejected_total"}
    predictor = PredictorProcess(model_dir).start()
    transformer = None
    try:
        transformer = TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis_server.url).start()
        samples = [(sample.name, sample.labels) for server in (predictor, transformer)
                   for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
                   for sample in family.samples]
    finally:
        if transformer is not None:
            transformer.stop()
        predictor.stop()
    missing = sorted(name + "{" + ", ".join(f'{label}{op}"{value}"' for label, op, value in matchers) + "}"
                     for name, matchers in wanted
                     if not any(n == name and matches(labels, matchers) for n, labels in samples))
    assert not missing, "no sample on a fresh stack for:\n" + "\n".join(missing)


def test_promtool_accepts_the_rules(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed: apt-get install -y prometheus (make system-deps does)")
    result = subprocess.run([promtool, "check", "rules", str(rule_file(tmp_path))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_queries(yaml.safe_load(RULES.read_text())))} rules found" in result.stdout


def test_every_dashboard_expression_returns_data(prometheus):
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    assert len(queries) >= 20
    found = problems_once_scraped(prometheus, queries)
    assert not found, "\n".join(found)


def test_every_alert_signal_returns_data(prometheus):
    queries = rule_queries(yaml.safe_load(RULES.read_text()))
    assert all(" bool " in q.expr for q in queries if q.where.startswith("alert"))
    found = problems_once_scraped(prometheus, queries)
    assert not found, "\n".join(found)


def test_prometheus_evaluates_every_rule_without_error(prometheus):
    expected = {q.where.split(" ", 1)[1] for q in rule_queries(yaml.safe_load(RULES.read_text()))}
    deadline = time.monotonic() + 30
    while True:
        groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        evaluated = {name for name, r in rules.items() if r.get("health") != "unknown"}
        if evaluated >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(rules) == expected
    assert {name: r.get("lastError") for name, r in rules.items() if r["health"] != "ok"} == {}


def test_a_misspelled_metric_or_a_syntax_error_fails_the_check(prometheus):
    dashboard = json.loads(DASHBOARD.read_text())
    assert not problems_once_scraped(prometheus, dashboard_queries(dashboard))
    broken = copy.deepcopy(dashboard)
    targets = [t for p in broken["panels"] for t in p.get("targets", [])]
    typo = next(t for t in targets if "sentiment_cache_hits_total" in t["expr"])
    typo["expr"] = typo["expr"].replace("sentiment_cache_hits_total", "sentiment_cache_hit_total")
    unbalanced = next(t for t in targets if "sentiment_redis_latency" in t["expr"])
    unbalanced["expr"] = unbalanced["expr"].removesuffix(")")
    found = problems(prometheus, dashboard_queries(broken))
    assert len(found) == 2, found
    assert "no data" in found[0] and "sentiment_cache_hit_total" in found[0]
    assert "bad_data" in found[1] and "Redis latency" in found[1]


def test_a_misspelled_label_in_an_alert_fails_the_check(prometheus):
    rules = yaml.safe_load(RULES.read_text())
    [rule] = [r for g in rules["spec"]["groups"] for r in g["rules"] if r.get("alert") == "SentimentPredictorShedding"]
    rule["expr"] = rule["expr"].replace('reason="queue_full"', 'reason="queue-full"')
    found = problems(prometheus, rule_queries(rules))
    assert [f.split(":", 1)[0] for f in found] == ["alert SentimentPredictorShedding"]


def test_queue_alerts_watch_the_predictor_default_limits():
    from predictor.settings import PredictorSettings

    defaults = {name: f.default for name, f in PredictorSettings.__dataclass_fields__.items()}
    rules = {r["alert"]: r["expr"] for g in yaml.safe_load(RULES.read_text())["spec"]["groups"] for r in g["rules"]}
    limits = {"SentimentPredictorQueueNearLimit": ("sentiment_predictor_queued_texts", "max_queued_texts"),
              "SentimentPredictorQueueTokensNearLimit": ("sentiment_predictor_queued_tokens", "max_queued_tokens")}
    checked = []
    for alert, (metric, setting) in limits.items():
        match = re.fullmatch(rf"max by \(namespace, pod\) \({metric}\) / (\d+) > 0\.8", rules[alert])
        assert match, rules[alert]
        if setting in defaults:  # max_queued_tokens comes with the token-budgeted queue
            assert int(match[1]) == defaults[setting], f"{alert}: the default --{setting} is {defaults[setting]}"
            checked.append(setting)
    assert "max_queued_texts" in checked


def test_dashboard_imports_cleanly():
    """What Grafana needs: unique panel ids, panels inside the 24-column grid without overlaps, every
    variable used in a query declared, every query on the dashboard's data source variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
    declared = {f"${v['name']}" for v in dashboard["templating"]["list"]} | set(GRAFANA_VARIABLES)
    assert {"$datasource", "$namespace"} <= declared
    for panel in panels:
        for target in panel.get("targets", []):
            assert set(re.findall(r"\$\w+", target["expr"])) <= declared, target["expr"]
            assert target["datasource"]["uid"] == "${datasource}"


def test_cluster_only_metrics_are_few_and_only_in_the_replicas_row():
    dashboard = json.loads(DASHBOARD.read_text())
    cluster_only = [q for q in dashboard_queries(dashboard) if q.cluster_only]
    assert {name for name in CLUSTER_ONLY_METRICS if any(name in q.expr for q in cluster_only)} == CLUSTER_ONLY_METRICS
    assert len(cluster_only) <= 3
    assert all("pods" in q.where for q in cluster_only)
    assert not [q for q in rule_queries(yaml.safe_load(RULES.read_text())) if q.cluster_only]


@pytest.mark.parametrize(("expr", "signal"), [
    ("sum(rate(x[5m])) > 0", "sum(rate(x[5m])) > bool 0"),
    ('a{status=~"5.."} / b > 0.05', 'a{status=~"5.."} / b > bool 0.05'),
    ('max by (pod) (q{l!="x", m=~">"}) / 2048 >= 0.8', 'max by (pod) (q{l!="x", m=~">"}) / 2048 >= bool 0.8'),
    ("x > bool 1", "x > bool 1"),
    ("sum(x)", "sum(x)"),
])
def test_as_signal_makes_the_top_level_threshold_a_bool_comparison(expr, signal):
    assert as_signal(expr) == signal
