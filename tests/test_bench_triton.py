"""The side-by-side engine's plain-data parts (bench/served.py: the round schedule, the pass counters, the summary),
bench/triton.py's goal, and the peer's own padding count (bench/triton_peer.py). Running the servers is the
benchmarks' job, not CI's."""

from __future__ import annotations

import numpy as np
import pytest

from bench.served import pass_figures, schedule, summarise
from bench.triton import AUTO, FP32, PEER, goal
from bench.triton_peer import padding, texts_of


def test_every_server_runs_once_a_round_one_at_a_time_and_none_always_first():
    order = schedule(["a", "b", "c"], 3)
    assert order == [(0, "a"), (0, "b"), (0, "c"), (1, "b"), (1, "c"), (1, "a"), (2, "c"), (2, "a"), (2, "b")]
    firsts = [server for i, (_, server) in enumerate(order) if i % 3 == 0]
    assert sorted(firsts) == ["a", "b", "c"]


def test_the_peer_counts_padding_to_each_batch_s_longest_text():
    assert padding([10, 4, 6]) == 10  # padded to 10: 30 computed, 20 the texts' own
    assert padding([7]) == 0


def test_the_peer_reads_a_batch_of_bytes_texts_in_order():
    column = np.array([[b"caf\xc3\xa9"], [b"bad"]], dtype=object)
    assert texts_of(column) == ["café", "bad"]


def test_pass_figures_are_shares_of_what_was_computed_between_two_readings():
    before = {"text": 100, "padding": 50, "passes": 10, "texts": 20}
    after = {"text": 400, "padding": 150, "passes": 30, "texts": 80}
    assert pass_figures(before, after) == {"padding_share": 0.25, "texts_per_pass": 3.0, "tokens_per_text": 5.0}
    assert pass_figures(before, before)["padding_share"] is None  # no pass ran: no share, not 0


def _row(server, clients, rps, p99, model="distilbert"):
    return {"model": model, "server": server, "concurrency": clients, "requests_per_s": rps, "p50_ms": p99 / 2,
            "p99_ms": p99, "padding_share": 0.3, "texts_per_pass": 8.0, "tokens_per_text": 20.0}


def test_the_summary_takes_each_server_s_median_round_and_its_ratio_to_the_reference():
    rows = [_row(PEER, 32, rps, p99) for rps, p99 in ((100, 400), (90, 500), (110, 300))]
    rows += [_row(FP32, 32, rps, p99) for rps, p99 in ((160, 380), (150, 420), (999, 100))]
    summary = {e["server"]: e for e in summarise(rows, reference=PEER, by=("model", "concurrency"))}
    assert summary[PEER]["requests_per_s"] == 100 and summary[PEER]["p99_ms"] == 400
    assert summary[FP32]["requests_per_s"] == 160 and summary[FP32]["rounds"] == 3
    assert summary[FP32]["throughput_vs_reference"] == pytest.approx(1.6)
    assert summary[FP32]["p99_vs_reference"] == pytest.approx(380 / 400)
    assert summary[PEER]["throughput_vs_reference"] == 1.0


def test_the_summary_compares_each_server_with_the_reference_at_the_same_concurrency_only():
    rows = [_row("batching", 1, 40, 30), _row("batching", 32, 120, 300), _row("no-batching", 32, 60, 600),
            _row("no-batching", 8, 50, 200)]  # bench.served's rows: one round, no reference at 8 clients
    summary = {(e["server"], e["concurrency"]): e for e in summarise(rows, reference="batching")}
    assert set(summary) == {("batching", 1), ("batching", 32), ("no-batching", 32), ("no-batching", 8)}
    assert summary[("no-batching", 32)]["throughput_vs_reference"] == pytest.approx(0.5)
    assert summary[("no-batching", 32)]["p99_vs_reference"] == pytest.approx(2.0)
    assert summary[("no-batching", 8)]["throughput_vs_reference"] is None  # not against another concurrency's
    assert "model" not in summary[("batching", 1)]


def test_the_goal_needs_both_the_throughput_ratio_and_a_p99_no_worse_than_the_peer_s():
    rows = [_row(PEER, 32, 100, 400), _row(FP32, 32, 160, 420), _row(AUTO, 32, 150, 390),
            _row(AUTO, 1, 10, 10), _row(PEER, 1, 100, 1), _row(AUTO, 32, 1, 1, model="minilm")]
    reached = goal(summarise(rows, reference=PEER, by=("model", "concurrency")))
    assert set(reached) == {FP32, AUTO}  # DistilBERT at 32 clients only
    assert reached[FP32]["met"] is False  # 1.6x, but p99 worse
    assert reached[AUTO]["met"] is True  # 1.5x, p99 better
    assert reached[AUTO]["throughput_vs_peer"] == pytest.approx(1.5)

