"""The request headers the transformer passes on to the predictor, so a miss stays one request in the mesh.

Istio's sidecars send each hop's span, but only the application can join them: it must copy the
trace context of the request it received onto the calls that request causes (Istio's distributed
tracing FAQ). These are Envoy's request id, W3C trace context, and the B3 and OpenTracing headers
Istio's tracers use. Nothing else is forwarded: the transformer's own credentials and headers are not
the predictor's business.
"""

from __future__ import annotations

from collections.abc import Mapping

FORWARDED = ("x-request-id", "traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
             "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "x-ot-span-context")


def trace_context(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The forwarded headers present in a request's `headers` (lower-case names, as KServe and the fast
    path hand them over)."""
    if not headers:
        return {}
    return {name: headers[name] for name in FORWARDED if headers.get(name)}
