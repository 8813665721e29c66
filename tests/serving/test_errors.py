"""The one error table: every class maps to one HTTP status and one gRPC code, and back."""

from __future__ import annotations

import pytest
from grpc import StatusCode

from serving.errors import (
    PEER_ERRORS,
    BadInput,
    Overloaded,
    TooLarge,
    UpstreamFailed,
    from_peer_grpc,
    from_peer_http,
    rest_response,
)


@pytest.mark.parametrize("cls", PEER_ERRORS)
def test_a_peer_error_comes_back_as_itself_over_either_transport(cls):
    assert type(from_peer_http(cls.http_status, "m")) is cls
    assert type(from_peer_grpc(cls.status_code, "m")) is cls


def test_codes_are_distinct_so_the_table_is_two_way():
    assert len({c.http_status for c in PEER_ERRORS}) == len({c.status_code for c in PEER_ERRORS}) == len(PEER_ERRORS)
    assert TooLarge.status_code != BadInput.status_code


def test_peer_server_faults_are_upstream_failures():
    assert type(from_peer_http(500, "boom")) is UpstreamFailed
    assert type(from_peer_grpc(StatusCode.INTERNAL, "boom")) is UpstreamFailed
    assert type(from_peer_http(418, "teapot")) is BadInput


def test_retry_after_travels_with_an_overload_over_either_transport():
    for error in (from_peer_http(429, "busy", "7"), from_peer_grpc(StatusCode.RESOURCE_EXHAUSTED, "busy", "7")):
        assert isinstance(error, Overloaded)
        assert rest_response(error) == (429, b'{"error":"busy"}', [(b"retry-after", b"7")])
    assert from_peer_grpc(StatusCode.RESOURCE_EXHAUSTED, "busy").headers == {"Retry-After": "1"}
