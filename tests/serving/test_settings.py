"""Declared settings: flag > environment > default, `None` for unset, values checked."""

from __future__ import annotations

import pytest

from predictor.settings import PredictorSettings
from serving.settings import parse_settings
from transformer.settings import TransformerSettings


def predictor(argv: list[str], env: dict[str, str] | None = None) -> PredictorSettings:
    return parse_settings(PredictorSettings, argv, "python -m predictor", "", env=env or {})


def transformer(argv: list[str], env: dict[str, str] | None = None) -> TransformerSettings:
    return parse_settings(TransformerSettings, argv, "python -m transformer", "", env=env or {})


def test_defaults_work_locally():
    s = transformer([])
    assert (s.predictor_host, s.redis_url, s.cache_ttl_s, s.redis_password) == (
        "127.0.0.1:8085", "redis://127.0.0.1:6379/0", 604800, None)
    assert predictor([]).threads is None and predictor([]).runtime == "onnx"


def test_flag_beats_environment_beats_default():
    env = {"CACHE_TTL_S": "60", "REDIS_URL": "redis://env:6379/0"}
    assert transformer([], env).cache_ttl_s == 60
    assert transformer(["--cache_ttl_s", "30"], env).cache_ttl_s == 30
    assert transformer([], env).redis_url == "redis://env:6379/0"
    assert transformer(["--redis_url", "redis://flag:6379/0"], env).redis_url == "redis://flag:6379/0"
    assert predictor([], {"PREDICTOR_THREADS": "3"}).threads == 3
    assert predictor(["--threads", "2"], {"PREDICTOR_THREADS": "3"}).threads == 2


def test_zero_is_a_value_not_unset():
    assert transformer(["--cache_ttl_s", "0"], {"CACHE_TTL_S": "60"}).cache_ttl_s == 0
    assert transformer(["--predictor_deadline_s", "0"]).predictor_deadline_s == 0
    assert predictor(["--max_wait_ms", "0"]).max_wait_ms == 0
    assert transformer([], {"CACHE_TTL_S": ""}).cache_ttl_s == 604800  # an empty variable is unset


def test_units_are_in_the_names_and_booleans_take_both_spellings():
    s = transformer(["--redis_socket_timeout_ms", "250", "--log_requests", "--predictor_use_ssl", "false"])
    assert (s.redis_socket_timeout_ms, s.log_requests, s.predictor_use_ssl) == (250.0, True, False)
    assert predictor(["--log_requests", "true"]).log_requests is True


def test_secrets_come_from_the_environment_only():
    assert transformer([], {"REDIS_PASSWORD": "pw"}).redis_password == "pw"
    with pytest.raises(SystemExit):
        transformer(["--redis_password", "pw"])


def test_bad_values_name_the_setting():
    with pytest.raises(SystemExit, match="PREDICTOR_RUNTIME='tensorflow' must be one of"):
        predictor([], {"PREDICTOR_RUNTIME": "tensorflow"})
    with pytest.raises(SystemExit, match="CACHE_TTL_S='a week' is not valid"):
        transformer([], {"CACHE_TTL_S": "a week"})
    with pytest.raises(SystemExit):
        predictor(["--runtime", "tensorflow"])


def test_limits_come_from_the_shared_flags():
    limits = transformer(["--max_texts", "8", "--max_chars", "100", "--max_body_bytes", "1000"]).limits
    assert (limits.max_texts, limits.max_chars, limits.max_body_bytes) == (8, 100, 1000)


def test_the_readme_lists_every_setting():
    import dataclasses

    from harness.processes import REPO

    section = (REPO / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for cls in (PredictorSettings, TransformerSettings):
        for f in dataclasses.fields(cls):
            if f.metadata.get("flag"):
                assert f"`--{f.name}`" in section, f"README's Configuration lacks --{f.name}"
            if f.metadata.get("env"):
                assert f"`{f.metadata['env']}`" in section, f"README's Configuration lacks {f.metadata['env']}"


def test_a_prefix_of_a_flag_is_not_taken_for_it():
    from serving.settings import ServerSettings, build_parser

    with pytest.raises(SystemExit):
        build_parser(ServerSettings, "x", "y").parse_args(["--max_body", "5"])
