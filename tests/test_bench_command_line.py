"""bench.common.command_line: a benchmark's flags are its run()'s parameters, read as their defaults say."""

from __future__ import annotations

import sys

import pytest

from bench.common import command_line

CALLS: list[dict] = []


def example(before: str, rate: float = 41, vus: int = 10, settings=("1x1", "2x1"), concurrencies=(1, 8),
            skip_original: bool = False, predictor_extra: list[str] | None = None, baseline: str | None = None):
    CALLS.append(dict(locals()))


def run_with(monkeypatch, *argv: str) -> dict:
    CALLS.clear()
    monkeypatch.setattr(sys, "argv", ["bench.example", *argv])
    command_line(example, "the example benchmark", before="the revision to compare with")
    (call,) = CALLS
    return call


def test_every_flag_defaults_as_run_does(monkeypatch):
    assert run_with(monkeypatch, "--before", "814a616") == {
        "before": "814a616", "rate": 41, "vus": 10, "settings": ("1x1", "2x1"), "concurrencies": (1, 8),
        "skip_original": False, "predictor_extra": None, "baseline": None}


def test_each_flag_reads_as_its_default_or_annotation_says(monkeypatch):
    call = run_with(monkeypatch, "--before", "814a616", "--rate", "2.5", "--vus", "3", "--settings", "2x1",
                    "--concurrencies", "1,32", "--skip_original", "--predictor_extra", "--runtime onnx-int8",
                    "--baseline", "643e28d")
    assert call == {"before": "814a616", "rate": 2.5, "vus": 3, "settings": ("2x1",), "concurrencies": (1, 32),
                    "skip_original": True, "predictor_extra": ["--runtime", "onnx-int8"], "baseline": "643e28d"}


def test_a_parameter_without_a_default_is_a_required_flag(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_with(monkeypatch, "--rate", "3")
    assert "the following arguments are required: --before" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_with(monkeypatch, "--before", "x", "--vus", "many")
    assert "--vus: invalid int value: 'many'" in capsys.readouterr().err
