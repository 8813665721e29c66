"""Admission: whether a request may wait for the model, decided before it waits.

A request's work is its tokens after truncation: over `max_request_tokens` it is refused (413),
and while the texts or tokens already queued leave no room for it (`max_queued_texts`,
`max_queued_tokens`) it is answered 429, so the queue is bounded in work as well as in texts.
"""

from __future__ import annotations

from serving.errors import Overloaded, TooLarge

from . import metrics


class Admission:
    """The limits and the count of texts and tokens accepted and not yet in a forward pass.

    Not locked: its owner (`workers.Workers`) calls `admit` and `release` under its own lock.
    `check_room` may also be called without it, as a cheap early refusal before tokenizing.
    """

    def __init__(self, max_queued_texts: int, max_request_tokens: int, max_queued_tokens: int):
        if max_queued_tokens < max_request_tokens:
            raise ValueError(f"max_queued_tokens ({max_queued_tokens}) must be at least max_request_tokens "
                             f"({max_request_tokens}), or a request within the budget could never be queued")
        self.max_queued_texts = max_queued_texts
        self.max_request_tokens = max_request_tokens
        self.max_queued_tokens = max_queued_tokens
        self.queued_texts = 0
        self.queued_tokens = 0

    def check_size(self, tokens: int, truncated_to: int) -> None:
        """413 for a request of more than `max_request_tokens` tokens."""
        if tokens > self.max_request_tokens:
            metrics.REJECTED.labels(reason="too_many_tokens").inc()
            raise TooLarge(f"request has {tokens:,} tokens after truncation to {truncated_to:,} per text; "
                           f"the limit is {self.max_request_tokens:,}")

    def check_room(self, texts: int, tokens: int) -> None:
        """429 when `texts` more texts of `tokens` tokens in all would overfill the queue."""
        if self.queued_texts + texts > self.max_queued_texts:
            metrics.REJECTED.labels(reason="queue_full").inc()
            raise Overloaded(f"server busy: {self.queued_texts} texts queued, the queue limit is "
                             f"{self.max_queued_texts}; retry later")
        if self.queued_tokens + tokens > self.max_queued_tokens:
            metrics.REJECTED.labels(reason="queue_full").inc()
            raise Overloaded(f"server busy: {self.queued_tokens:,} tokens queued, the queue limit is "
                             f"{self.max_queued_tokens:,} tokens; retry later")

    def admit(self, texts: int, tokens: int) -> None:
        """Count a request in, or raise Overloaded."""
        self.check_room(texts, tokens)
        self._add(texts, tokens)

    def release(self, texts: int, tokens: int) -> None:
        """Count texts out: in a forward pass now, or dropped."""
        self._add(-texts, -tokens)

    def _add(self, texts: int, tokens: int) -> None:
        self.queued_texts += texts
        self.queued_tokens += tokens
        metrics.QUEUED_TEXTS.set(self.queued_texts)
        metrics.QUEUED_TOKENS.set(self.queued_tokens)
