"""The scheduling policy on plain data: requests as token lengths, passes as (request, texts) pairs."""

from __future__ import annotations

import itertools
import random

import pytest

from predictor.scheduler import (
    MAX_SKIPPED_PASSES,
    SIZE_CLASS_TOKENS,
    Budget,
    Request,
    is_full,
    next_pass,
    take,
)

BUDGET = Budget(max_texts=32, max_tokens=512, pad_slack_tokens=64)


def passes(requests: list[Request], budget: Budget = BUDGET) -> list[list[tuple[int, list[int]]]]:
    """Run the scheduler until every text is in a pass: each pass as [(seq, lengths taken)]."""
    done = []
    while any(r.lengths for r in requests):
        chosen = next_pass(requests, budget)
        assert chosen.takes, "texts are left but the pass is empty"
        done.append([(requests[i].seq, requests[i].lengths[:count]) for i, count in chosen.takes])
        take(requests, chosen)
    return done


def test_nothing_pending_is_an_empty_pass():
    assert next_pass([], BUDGET).takes == ()
    assert next_pass([Request(0, [])], BUDGET).takes == ()


def test_a_request_within_the_budget_is_one_pass_shortest_first():
    assert passes([Request(0, [9, 7, 8])]) == [[(0, [7, 8, 9])]]


def test_passes_are_capped_by_texts_and_padded_tokens():
    rng = random.Random(5)
    budget = Budget(max_texts=8, max_tokens=128)
    lengths = [rng.randint(3, 64) for _ in range(60)]
    ran = passes([Request(0, lengths)], budget)
    for p in ran:
        taken = [length for _, ls in p for length in ls]
        assert len(taken) <= 8
        assert len(taken) * max(taken) <= 128
    assert sorted(length for p in ran for _, ls in p for length in ls) == sorted(lengths)


def test_a_text_over_the_token_budget_still_gets_a_pass_of_its_own():
    assert passes([Request(0, [600, 5])], Budget(max_texts=32, max_tokens=512)) == [[(0, [5])], [(0, [600])]]


def test_lengths_within_2x_share_a_pass_whatever_the_padding():
    assert passes([Request(0, [100, 199])], Budget(32, 1024, pad_slack_tokens=0)) == [[(0, [100, 199])]]


def test_the_2x_rule_holds_against_the_passs_shortest_text():
    # Each text is within 2x of the one before, but not of the shortest: a pass that grew text by
    # text would pad the 3-token text to 33.
    assert passes([Request(0, [3, 5, 9, 17, 33])], Budget(32, 1024, pad_slack_tokens=0)) == [
        [(0, [3, 5])], [(0, [9, 17])], [(0, [33])]]
    # Across requests too: each joins only while the pass stays within 2x.
    assert passes([Request(0, [4]), Request(1, [7]), Request(2, [12])], Budget(32, 1024, pad_slack_tokens=0)) == [
        [(0, [4]), (1, [7])], [(2, [12])]]


def test_a_text_over_2x_joins_only_within_the_padding_slack():
    # 3 then 10: 7 tokens of padding for the first text; 50 would add 2 x 40 = 80 > 64.
    assert passes([Request(0, [50, 3, 10])]) == [[(0, [3, 10])], [(0, [50])]]
    # A short text joining a pass of a long one is padded by the difference: 30 - 3 = 27 fits 64.
    assert passes([Request(0, [30]), Request(1, [3])]) == [[(0, [30]), (1, [3])]]
    # A long text joining a pass of short ones pads each of them: 200 - 3 does not fit.
    assert passes([Request(0, [200]), Request(1, [3])]) == [[(1, [3])], [(0, [200])]]


def test_least_served_first():
    old = Request(0, [20], served_tokens=500)
    new = Request(1, [20])
    chosen = next_pass([old, new], Budget(max_texts=1, max_tokens=512))
    assert chosen.takes == ((1, 1),)


def test_fewer_passes_left_first():
    large = Request(0, [60] * 10)  # 600 tokens: 2 passes
    small = Request(1, [60] * 2)
    assert next_pass([large, small], Budget(32, 512)).takes[0] == (1, 2)


def test_smaller_size_class_first_then_first_come_first_served():
    long_one = Request(0, [300])
    short = Request(1, [20])
    assert next_pass([long_one, short], Budget(1, 512)).takes == ((1, 1),)
    # Within one size class, arrival order: a slightly longer, older text is not overtaken.
    older = Request(0, [SIZE_CLASS_TOKENS - 1])
    younger = Request(1, [5])
    assert next_pass([older, younger], Budget(1, 512)).takes == ((0, 1),)


def test_large_requests_take_turns():
    a = Request(0, [61] * 8)
    b = Request(1, [61] * 8)
    ran = passes([a, b], Budget(32, 128))  # two texts per pass
    owners = [p[0][0] for p in ran]
    assert all(len(p) == 1 and len(p[0][1]) == 2 for p in ran)
    assert sorted(owners) == [0] * 4 + [1] * 4
    assert all(x != y for x, y in itertools.pairwise(owners))


def test_a_short_request_leads_the_next_pass_beside_a_large_one_under_way():
    large = Request(0, [62] * 38, served_tokens=2 * 62)  # its first pass has run
    short = Request(1, [4])
    assert passes([large, short], Budget(32, 128, pad_slack_tokens=16))[0] == [(1, [4])]


def test_an_overtaken_request_leads_after_max_skipped_passes():
    large = Request(0, [42] * 6)
    shorts = [Request(seq, [4]) for seq in range(1, 31)]  # all younger than it
    ran = passes([large, *shorts], Budget(max_texts=1, max_tokens=512))
    large_passes = [i for i, p in enumerate(ran) if p[0][0] == 0]
    assert large_passes[0] == MAX_SKIPPED_PASSES
    assert all(b - a == MAX_SKIPPED_PASSES + 1 for a, b in itertools.pairwise(large_passes))
    assert len(large_passes) == 6 and large_passes[-1] < len(ran) - 1  # finished while short ones waited


def test_only_older_requests_left_out_count_as_overtaken():
    old, served, young = Request(0, [300]), Request(1, [5]), Request(2, [300])
    chosen = next_pass([old, served, young], Budget(1, 512))
    assert chosen.takes == ((1, 1),)
    assert chosen.overtaken == (0,)
    take([old, served, young], chosen)
    assert (old.skipped_passes, served.skipped_passes, young.skipped_passes) == (1, 0, 0)


def test_take_moves_the_texts_out_and_counts_them_served():
    request = Request(0, [5, 9, 7], skipped_passes=2)
    take([request], next_pass([request], Budget(2, 512)))
    assert (request.lengths, request.pending_tokens, request.served_tokens, request.skipped_passes) == ([9], 9, 12, 0)


def test_next_pass_changes_nothing():
    requests = [Request(0, [5, 9]), Request(1, [300], served_tokens=7, skipped_passes=3)]
    before = [(r.lengths[:], r.pending_tokens, r.served_tokens, r.skipped_passes) for r in requests]
    assert next_pass(requests, BUDGET) == next_pass(requests, BUDGET)
    assert [(r.lengths, r.pending_tokens, r.served_tokens, r.skipped_passes) for r in requests] == before


@pytest.mark.parametrize(("lengths", "full"), [([10] * 31, False), ([10] * 32, True), ([500], False),
                                               ([500, 12], True)])
def test_is_full_when_the_pending_texts_fill_a_pass(lengths, full):
    assert is_full([Request(0, lengths)], BUDGET) is full
