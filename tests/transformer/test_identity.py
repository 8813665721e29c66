"""The model-identity policy on plain data: which fingerprints a request may be answered from."""

from __future__ import annotations

from transformer.identity import ModelIdentity, choose, decode_record, encode_record, live


def test_after_a_rollout_only_the_new_model_is_read():
    # A answered until t=100; B first answered at t=120 and A never again.
    assert live({"A": (0, 100), "B": (120, 130)}, now=131) == ["B"]


def test_while_two_revisions_alternate_both_are_read_newest_first():
    seen = {"A": (0, 140), "B": (120, 130)}  # A answered again after B appeared
    assert live(seen, now=141) == ["A", "B"]
    assert live(seen, now=130 + 600 + 1, window_s=600) == ["A"]  # B silent past the window


def test_nothing_known_and_one_known():
    assert live({}, now=0) == []
    assert live({"F": (float("-inf"), float("-inf"))}, now=5) == ["F"]


def test_choose_prefers_a_full_cover_then_the_most_found_then_the_newest():
    assert choose(["B", "A"], {"A": 3, "B": 1}, wanted=3) == "A"
    assert choose(["B", "A"], {"A": 3, "B": 3}, wanted=3) == "B"
    assert choose(["B", "A"], {"A": 2, "B": 1}, wanted=3) == "A"
    assert choose(["B", "A"], {"A": 1, "B": 1}, wanted=3) == "B"
    assert choose(["B", "A"], {}, wanted=3) == "B"


def test_record_round_trip_and_foreign_records():
    identity = ModelIdentity("abc-onnx", ("NEGATIVE", "POSITIVE"))
    assert decode_record(encode_record(identity)) == identity
    for raw in (None, b"", b"garbage", b"[1, 2]", b'{"labels": []}'):
        assert decode_record(raw) is None
