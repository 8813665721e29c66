"""Calls the predictor over v1, v2 REST or v2 gRPC, waiting out cold starts up to a deadline."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import numpy as np
import orjson
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from serving.errors import HTTP_STATUSES, Unavailable, UpstreamFailed, from_peer_grpc, from_peer_http
from serving.protocol import LABELS_OUTPUT, PROBABILITIES_OUTPUT, TEXT_INPUT

from . import metrics
from .retry import RetryPolicy
from .settings import PROTOCOLS
from .shapes import Predictions

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
"""Longest wait for one TCP connection to the predictor before trying again."""
MIN_ATTEMPT_S = 0.01
"""Less of the deadline than this left after a pause: give up instead of an attempt that cannot finish."""
RETRIED_HTTP_STATUSES = (502, 503, 504)
"""Knative's activator and queue-proxy while the predictor scales up, or a predictor loading its model."""


class _Retryable(Exception):
    """The predictor is not there yet (connection refused, 503 while starting): try again."""


class PredictorClient:
    """One client per transformer process; `predict` retries only what is safe to retry.

    No attempt outlives the deadline: each runs with the per-attempt timeout or what is left of
    `deadline_s`, whichever is shorter, so a predictor that accepts connections and never answers
    (frozen, or its node gone) costs a request `deadline_s`, not `attempt_timeout_s` on top.
    """

    def __init__(self, host: str, model_name: str, protocol: str = "v2", use_ssl: bool = False,
                 deadline_s: float = 60, attempt_timeout_s: float = 30, max_connections: int = 100,
                 retry: RetryPolicy | None = None):
        if protocol not in PROTOCOLS:
            raise ValueError(f"predictor protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.host = host
        self.model_name = model_name
        self.protocol = protocol
        self.deadline_s = deadline_s
        self.attempt_timeout_s = attempt_timeout_s
        self.retry = retry or RetryPolicy()
        self.base_url = f"{'https' if use_ssl else 'http'}://{host}"
        self.max_connections = max_connections
        # aiohttp, not httpx: 0.7 ms of CPU per call instead of 2.0-2.4 ms, measured on the transformer's
        # event loop, where that time delays every cache hit queued behind a miss (bench.k6_mix, its CPU rows).
        self._http: aiohttp.ClientSession | None = None  # made on the serving event loop, at first use
        self._channel: grpc.aio.Channel | None = None
        self._unreachable_since: float | None = None
        self._use_ssl = use_ssl
        for kind in error_kinds(protocol):  # every series from the start: a rate() needs one to work from
            metrics.PREDICTOR_ERRORS.labels(kind=kind)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._channel is not None:
            await self._channel.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                base_url=self.base_url,
                connector=aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=60))
        return self._http

    async def predict(self, texts: list[str], trace: dict[str, str] | None = None) -> Predictions:
        """Probabilities for `texts`, sent with the `trace` headers of the request that asked
        (transformer.trace_headers); raises a ServiceError the client can act on."""
        start = time.monotonic()
        deadline = start + self.deadline_s
        failures = 0
        last_error = "none yet"
        try:
            while (remaining := deadline - time.monotonic()) > MIN_ATTEMPT_S:
                try:
                    answer = await self._attempt(texts, _Limit.of(self, remaining), trace or {})
                except _Retryable as exc:
                    metrics.PREDICTOR_ERRORS.labels(kind="unreachable").inc()
                    self._note_unreachable(exc)
                    failures, last_error = failures + 1, str(exc)
                    pause = self.retry.pause_s(failures, deadline - time.monotonic(), random.random())
                    log.debug("predictor not reachable yet (%s); retrying in %.2fs", exc, pause)
                    await asyncio.sleep(pause)
                    continue
                if self._unreachable_since is not None:
                    log.info("predictor at %s reachable again after %.1fs", self.host,
                             time.monotonic() - self._unreachable_since)
                    self._unreachable_since = None
                return answer
            raise Unavailable(f"predictor at {self.host} not reachable within {self.deadline_s:g}s "
                              f"(last error: {last_error}); retry later")
        finally:
            metrics.PREDICTOR_LATENCY.observe(time.monotonic() - start)

    def _note_unreachable(self, exc: Exception) -> None:
        """One log line per outage, not one per waiting request and retry (a cold start holds hundreds)."""
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
            log.info("predictor at %s not reachable (%s); requests wait up to %gs for it", self.host, exc,
                     self.deadline_s)

    async def _attempt(self, texts: list[str], limit: _Limit, trace: dict[str, str]) -> Predictions:
        if self.protocol == "grpc-v2":
            return await self._grpc(texts, limit, trace)
        if self.protocol == "v1":
            response = await self._post(f"/v1/models/{self.model_name}:predict", {"instances": texts}, limit, trace)
            return _decoded("v1", _from_v1, response, len(texts))
        body = {"inputs": [{"name": TEXT_INPUT, "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
        response = await self._post(f"/v2/models/{self.model_name}/infer", body, limit, trace)
        return _decoded("v2", lambda r, n: _from_v2(InferResponse.from_rest(r), n), response, len(texts))

    async def _post(self, path: str, body: dict, limit: _Limit, trace: dict[str, str]) -> Any:
        timeout = aiohttp.ClientTimeout(total=limit.seconds, sock_connect=min(CONNECT_TIMEOUT_S, limit.seconds))
        try:
            async with self._session().post(path, data=orjson.dumps(body), timeout=timeout,
                                            headers={**trace, "content-type": "application/json"}) as r:
                status, content, retry_after = r.status, await r.read(), r.headers.get("retry-after")
        except aiohttp.ConnectionTimeoutError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        except TimeoutError:
            metrics.PREDICTOR_ERRORS.labels(kind="timeout").inc()
            raise limit.exceeded() from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            # Refused, reset or closed (a predictor starting, or dying mid-request). Predictions
            # have no side effects, so asking again is safe.
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        if status == 200:
            try:
                return orjson.loads(content)
            except orjson.JSONDecodeError:
                raise UpstreamFailed("predictor returned a body that is not JSON") from None
        message = _error_message(content, status)
        if status in RETRIED_HTTP_STATUSES:
            # Knative's activator/queue-proxy, or a predictor still loading its model.
            raise _Retryable(f"HTTP {status}: {message}")
        metrics.PREDICTOR_ERRORS.labels(kind=f"http_{status}").inc()
        raise from_peer_http(status, f"predictor: {message}", retry_after)

    async def _grpc(self, texts: list[str], limit: _Limit, trace: dict[str, str]) -> Predictions:
        if self._channel is None:
            options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
            self._channel = (grpc.aio.secure_channel(self.host, grpc.ssl_channel_credentials(), options)
                             if self._use_ssl else grpc.aio.insecure_channel(self.host, options))
        stub = GRPCInferenceServiceStub(self._channel)
        request = InferRequest(self.model_name, [InferInput(TEXT_INPUT, [len(texts)], "BYTES", texts)]).to_grpc()
        try:
            response: pb.ModelInferResponse = await stub.ModelInfer(request, timeout=limit.seconds,
                                                                      metadata=tuple(trace.items()))
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.UNAVAILABLE:
                raise _Retryable(f"gRPC UNAVAILABLE: {details}") from None
            metrics.PREDICTOR_ERRORS.labels(kind=f"grpc_{code.name.lower()}").inc()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise limit.exceeded() from None
            retry_after = dict(exc.trailing_metadata() or ()).get("retry-after")
            raise from_peer_grpc(code, f"predictor: {details}", retry_after) from None
        return _decoded("grpc-v2", lambda r, n: _from_v2(InferResponse.from_grpc(r), n), response, len(texts))


@dataclass(frozen=True)
class _Limit:
    """How long one attempt may take, and which limit that is (for the 503's message)."""

    seconds: float
    host: str
    by_deadline: bool
    deadline_s: float

    @classmethod
    def of(cls, client: PredictorClient, remaining_s: float) -> _Limit:
        by_deadline = remaining_s < client.attempt_timeout_s
        return cls(remaining_s if by_deadline else client.attempt_timeout_s, client.host, by_deadline,
                   client.deadline_s)

    def exceeded(self) -> Unavailable:
        if self.by_deadline:
            return Unavailable(f"predictor at {self.host} did not answer within {self.deadline_s:g}s "
                               "(--predictor_deadline_s); retry later")
        return Unavailable(f"predictor at {self.host} did not answer within {self.seconds:g}s "
                           "(--predictor_request_timeout_seconds)")


def error_kinds(protocol: str) -> tuple[str, ...]:
    """The `kind` label values of sentiment_predictor_errors_total a client of `protocol` can count
    (statuses beyond the error family's, from a proxy, are counted as they come)."""
    if protocol == "grpc-v2":
        codes = (code for code in grpc.StatusCode if code not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE))
        return ("unreachable", *(f"grpc_{code.name.lower()}" for code in codes))
    statuses = sorted(set(HTTP_STATUSES) - set(RETRIED_HTTP_STATUSES))
    return ("unreachable", "timeout", *(f"http_{status}" for status in statuses))


MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError)
"""What decoding an answer of the wrong shape raises (numpy's casts and reshapes, dict and list access)."""


def _decoded(protocol: str, decode: Callable[[Any, int], Predictions], response: Any, n: int) -> Predictions:
    """`decode(response, n)`; a predictor answer it cannot read is the predictor's failure (502), not ours."""
    try:
        return decode(response, n)
    except MALFORMED as exc:
        raise UpstreamFailed(f"predictor's {protocol} answer is malformed ({type(exc).__name__}: {exc}); it must "
                             f"carry one row of scores per text, labels and the model version") from None


def _from_v1(body: dict, n: int) -> Predictions:
    labels = [str(label) for label in body["labels"]]
    version = str(body["model_version"])
    probs = np.array([[{p["label"]: p["score"] for p in row}[lab] for lab in labels]
                      for row in body["predictions"]], dtype=np.float32)
    return _checked(probs, labels, version, n)


def _from_v2(response: InferResponse, n: int) -> Predictions:
    outputs = {o.name: o for o in response.outputs}
    if PROBABILITIES_OUTPUT not in outputs or LABELS_OUTPUT not in outputs:
        raise UpstreamFailed(f"predictor's v2 response lacks '{PROBABILITIES_OUTPUT}' or '{LABELS_OUTPUT}'")
    labels = [x.decode() if isinstance(x, bytes) else str(x) for x in outputs[LABELS_OUTPUT].as_numpy().tolist()]
    probs = outputs[PROBABILITIES_OUTPUT].as_numpy().astype(np.float32).reshape(-1, len(labels))
    return _checked(probs, labels, response.model_version or "unversioned", n)


def _checked(probs: np.ndarray, labels: list[str], version: str, n: int) -> Predictions:
    if not labels or len(set(labels)) != len(labels):
        raise UpstreamFailed(f"predictor returned the labels {labels[:10]}; a model has distinct labels, at least one")
    if probs.shape != (n, len(labels)):
        raise UpstreamFailed(f"predictor returned scores of shape {list(probs.shape)} for {n} texts and "
                             f"{len(labels)} labels")
    if not np.isfinite(probs).all():
        raise UpstreamFailed("predictor returned scores that are not finite numbers")
    return Predictions(probs, labels, version)


def _error_message(content: bytes, status: int) -> str:
    text = content.decode("utf-8", "replace")
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return text[:500] or f"HTTP {status}"
    return str(body.get("error", text)) if isinstance(body, dict) else text
