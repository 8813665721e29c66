"""Prometheus metrics of the predictor, served on KServe's /metrics next to its own."""

from prometheus_client import Counter, Gauge, Histogram

BATCH_TEXTS = Histogram("sentiment_predictor_batch_texts", "Texts per forward pass.",
                        buckets=(1, 2, 4, 8, 16, 32, 64, 128))
BATCH_TOKENS = Histogram("sentiment_predictor_batch_tokens",
                         "Padded tokens per forward pass (texts x the longest text in the pass).",
                         buckets=(16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384))
PASS_TOKENS = Counter("sentiment_predictor_pass_tokens_total",
                      "Tokens computed in forward passes: kind=text (the texts' own) or padding (added to reach "
                      "each pass's longest text); padding / (text + padding) is the compute padding wastes.",
                      ["kind"])
for _kind in ("text", "padding"):
    PASS_TOKENS.labels(kind=_kind)
QUEUED_TEXTS = Gauge("sentiment_predictor_queued_texts", "Texts accepted and waiting for a forward pass.")
QUEUED_TOKENS = Gauge("sentiment_predictor_queued_tokens", "Tokens of the texts waiting for a forward pass.")
REJECTED = Counter("sentiment_predictor_rejected_total",
                   "Requests refused before queueing: queue_full (429) or too_many_tokens (413).", ["reason"])
for _reason in ("queue_full", "too_many_tokens"):  # both series from the start: a rate() needs one to work from
    REJECTED.labels(reason=_reason)
RUNTIME_INFO = Gauge("sentiment_predictor_runtime_info",
                     "1 for the runtime this predictor serves; reason: requested (--runtime), or --runtime auto's "
                     "fastest-passing, gate-failed, not-faster, no-calibration-set (predictor/gate.py); source: flag, "
                     "export (recorded for this CPU class) or start-up (measured).",
                     ["runtime", "reason", "source", "cpu_class"])
